/* mc_load: a memcached load generator that checks every byte it reads back.
 *
 * Each connection (one thread each) owns its keys "<prefix>-<conn>-<i>" and, per round, sets
 * them with values whose bytes follow from (key, round, size), reads them back, appends to some,
 * deletes some, runs incr on a counter and a cas exchange (a fresh unique must win, a stale one
 * must lose). A hit must hold exactly the bytes last written; a miss is allowed only for keys a
 * small cache may have evicted. It runs where Python cannot (the QEMU guest), so the tests,
 * scripts/bench-memcached and scripts/demo all use it.
 *
 * Output: one line "mc_load: conns=.. ops=.. hits=.. misses=.. mismatches=.. errors=..
 * seconds=.. ops_per_sec=..". Exit status 0 when there were no mismatches and no errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct options {
  const char *host;
  int port;
  int conns;
  int keys;
  long max_size;
  int rounds;
  int gets;          /* gets per key per round */
  const char *prefix;
  int check_only;    /* only read the keys a finished run left and check them */
  int quiet;
  int wait_s;        /* keep trying to connect this long (the server may be starting) */
};

struct counters {
  long ops, hits, misses, mismatches, errors;
};

struct conn {
  int fd;
  int id;
  char *rbuf;        /* bytes received and not yet consumed: [rpos, rlen) */
  size_t rcap, rpos, rlen;
  struct counters c;
  const struct options *o;
};

static void complain(struct conn *k, const char *fmt, ...) {
  if (k->o->quiet) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "mc_load[%d]: ", k->id);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* The value of a key for a round: a size from 1 byte up to max_size (spread over powers of
 * two), and bytes that depend on the key, the round and the position. */
static long value_size(const struct options *o, int conn, int i) {
  unsigned h = (unsigned)(conn * 7919 + i * 104729);
  long size = 1;
  int shift = (int)(h % 21);           /* 1 B .. 1 MiB before the cap */
  size <<= shift;
  size += (long)(h / 21 % 97);
  return size > o->max_size ? o->max_size : size;
}

static unsigned char value_byte(unsigned seed, long pos) {
  uint32_t x = seed ^ (uint32_t)(pos * 2654435761u);
  x ^= x >> 15;
  x *= 2246822519u;
  x ^= x >> 13;
  return (unsigned char)('a' + x % 26);
}

static unsigned value_seed(const char *key, int round) {
  uint32_t h = 2166136261u;
  for (const char *p = key; *p; ++p) h = (h ^ (unsigned char)*p) * 16777619u;
  return h ^ (uint32_t)(round * 0x9E3779B1u);
}

static void fill_value(unsigned char *buf, const char *key, int round, long size) {
  unsigned seed = value_seed(key, round);
  for (long p = 0; p < size; ++p) buf[p] = value_byte(seed, p);
}

static int send_all(struct conn *k, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t n = send(k->fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Makes at least `want` unread bytes available. */
static int fill(struct conn *k, size_t want) {
  if (k->rpos > 0 && k->rlen - k->rpos < want) {
    memmove(k->rbuf, k->rbuf + k->rpos, k->rlen - k->rpos);
    k->rlen -= k->rpos;
    k->rpos = 0;
  }
  while (k->rlen - k->rpos < want) {
    if (k->rcap - k->rlen < 65536) {
      k->rcap = k->rcap * 2 + want + 65536;
      k->rbuf = realloc(k->rbuf, k->rcap);
      if (!k->rbuf) return -1;
    }
    ssize_t n = recv(k->fd, k->rbuf + k->rlen, k->rcap - k->rlen, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    k->rlen += (size_t)n;
  }
  return 0;
}

/* Reads one "\r\n"-terminated line into line (without the terminator). */
static int read_line(struct conn *k, char *line, size_t cap) {
  for (size_t scanned = 0;;) {
    char *start = k->rbuf + k->rpos;
    size_t avail = k->rlen - k->rpos;
    char *nl = avail > scanned ? memchr(start + scanned, '\n', avail - scanned) : NULL;
    if (nl) {
      size_t n = (size_t)(nl - start);
      if (n && start[n - 1] == '\r') --n;
      if (n >= cap) n = cap - 1;
      memcpy(line, start, n);
      line[n] = '\0';
      k->rpos += (size_t)(nl - start) + 1;
      return 0;
    }
    scanned = avail;
    if (fill(k, avail + 1) != 0) return -1;
  }
}

static int expect_line(struct conn *k, const char *want, const char *what) {
  char line[512];
  k->c.ops++;
  if (read_line(k, line, sizeof line) != 0) {
    complain(k, "%s: connection lost", what);
    k->c.errors++;
    return -1;
  }
  if (strcmp(line, want) != 0) {
    complain(k, "%s: expected '%s', got '%s'", what, want, line);
    k->c.errors++;
    return 1;
  }
  return 0;
}

static int store(struct conn *k, const char *cmd, const char *key, const unsigned char *val, long size,
                 const char *extra) {
  char head[400];
  int n = snprintf(head, sizeof head, "%s %s 0 0 %ld%s\r\n", cmd, key, size, extra ? extra : "");
  if (send_all(k, head, (size_t)n) || send_all(k, val, (size_t)size) || send_all(k, "\r\n", 2)) {
    complain(k, "%s %s: send failed", cmd, key);
    k->c.errors++;
    return -1;
  }
  return 0;
}

/* get/gets: returns 1 on a hit (value in *out, its length in *len, cas in *cas), 0 on a miss,
 * -1 on a protocol error. */
static int fetch(struct conn *k, const char *cmd, const char *key, unsigned char **out, long *len,
                 unsigned long long *cas) {
  char line[600];
  int n = snprintf(line, sizeof line, "%s %s\r\n", cmd, key);
  k->c.ops++;
  if (send_all(k, line, (size_t)n) || read_line(k, line, sizeof line)) goto lost;
  if (!strcmp(line, "END")) return 0;
  char rkey[300];
  unsigned flags;
  long bytes;
  unsigned long long unique = 0;
  if (sscanf(line, "VALUE %299s %u %ld %llu", rkey, &flags, &bytes, &unique) < 3 || strcmp(rkey, key)) {
    complain(k, "%s %s: unexpected reply '%s'", cmd, key, line);
    k->c.errors++;
    return -1;
  }
  /* The value, its "\r\n" and the "END\r\n" that follows, all in the buffer at once, so the
   * pointer handed out stays valid until the next read. */
  if (fill(k, (size_t)bytes + 7)) goto lost;
  *out = (unsigned char *)k->rbuf + k->rpos;
  *len = bytes;
  if (cas) *cas = unique;
  k->rpos += (size_t)bytes + 7;
  if (memcmp(*out + bytes, "\r\nEND\r\n", 7) != 0) {
    complain(k, "%s %s: the value is not followed by END", cmd, key);
    k->c.errors++;
    return -1;
  }
  return 1;
lost:
  complain(k, "%s %s: connection lost", cmd, key);
  k->c.errors++;
  return -1;
}

/* The value read must be exactly `want` (or a miss, when allowed). */
static void check_value(struct conn *k, const char *key, const unsigned char *want, long size, int may_miss) {
  unsigned char *got;
  long len;
  int r = fetch(k, "get", key, &got, &len, NULL);
  if (r < 0) return;
  if (r == 0) {
    k->c.misses++;
    if (!may_miss) {
      complain(k, "get %s: miss where a hit was required", key);
      k->c.mismatches++;
    }
    return;
  }
  k->c.hits++;
  if (len != size || memcmp(got, want, (size_t)size) != 0) {
    long at = 0;
    while (at < len && at < size && got[at] == want[at]) ++at;
    complain(k, "get %s: WRONG DATA: %ld bytes, expected %ld; first difference at byte %ld", key, len, size, at);
    k->c.mismatches++;
  }
}

static void run_conn(struct conn *k) {
  const struct options *o = k->o;
  long cap = (o->max_size > 100 ? o->max_size : 100) + 64;   /* the cas value is 100 bytes */
  unsigned char *val = malloc((size_t)cap);
  char key[300];
  if (!val) { k->c.errors++; return; }
  if (o->check_only) {
    for (int i = 0; i < o->keys; ++i) {
      snprintf(key, sizeof key, "%s-%d-%d", o->prefix, k->id, i);
      if (i % 7 == 3) continue;   /* deleted in the last round */
      long size = value_size(o, k->id, i);
      fill_value(val, key, o->rounds, size);
      check_value(k, key, val, size, 1);
    }
    free(val);
    return;
  }
  for (int round = 1; round <= o->rounds; ++round) {
    for (int i = 0; i < o->keys; ++i) {
      snprintf(key, sizeof key, "%s-%d-%d", o->prefix, k->id, i);
      long size = value_size(o, k->id, i);
      fill_value(val, key, round, size);
      if (store(k, "set", key, val, size, NULL) || expect_line(k, "STORED", "set")) continue;
      for (int g = 0; g < o->gets; ++g) check_value(k, key, val, size, 1);
      if (i % 5 == 1 && size + 9 <= cap) {   /* append, then the whole value is checked */
        static const unsigned char tail[] = "+appended";
        if (store(k, "append", key, tail, 9, NULL)) continue;
        char line[512];
        k->c.ops++;
        if (read_line(k, line, sizeof line)) { k->c.errors++; continue; }
        if (!strcmp(line, "STORED")) {
          memcpy(val + size, tail, 9);
          check_value(k, key, val, size + 9, 1);
        } else if (strcmp(line, "NOT_STORED")) {  /* NOT_STORED: evicted meanwhile */
          complain(k, "append %s: '%s'", key, line);
          k->c.errors++;
        }
      }
      if (i % 7 == 3) {                       /* delete, then it must be gone */
        char cmd[320];
        int n = snprintf(cmd, sizeof cmd, "delete %s\r\n", key);
        char line[512];
        k->c.ops++;
        if (send_all(k, cmd, (size_t)n) || read_line(k, line, sizeof line)) { k->c.errors++; continue; }
        if (strcmp(line, "DELETED") && strcmp(line, "NOT_FOUND")) {
          complain(k, "delete %s: '%s'", key, line);
          k->c.errors++;
        }
        unsigned char *got;
        long len;
        int r = fetch(k, "get", key, &got, &len, NULL);
        if (r > 0) {
          complain(k, "get %s: a deleted key is still there", key);
          k->c.mismatches++;
        }
      }
    }
    /* incr: a counter this connection alone uses. */
    snprintf(key, sizeof key, "%s-%d-counter", o->prefix, k->id);
    if (store(k, "set", key, (const unsigned char *)"10", 2, NULL) || expect_line(k, "STORED", "set counter")) continue;
    for (int n = 1; n <= 20; ++n) {
      char cmd[340], want[32];
      int len = snprintf(cmd, sizeof cmd, "incr %s 3\r\n", key);
      snprintf(want, sizeof want, "%d", 10 + 3 * n);
      if (send_all(k, cmd, (size_t)len)) { k->c.errors++; break; }
      if (expect_line(k, want, "incr") != 0) { k->c.mismatches++; break; }
    }
    /* cas: a fresh unique wins, the same unique afterwards loses. */
    snprintf(key, sizeof key, "%s-%d-cas", o->prefix, k->id);
    fill_value(val, key, round, 100);
    if (store(k, "set", key, val, 100, NULL) || expect_line(k, "STORED", "set cas")) continue;
    unsigned char *got;
    long len;
    unsigned long long unique = 0;
    if (fetch(k, "gets", key, &got, &len, &unique) != 1) { k->c.mismatches++; continue; }
    char extra[40];
    snprintf(extra, sizeof extra, " %llu", unique);
    fill_value(val, key, round + 1000, 100);
    if (store(k, "cas", key, val, 100, extra) || expect_line(k, "STORED", "cas (fresh unique)")) continue;
    if (store(k, "cas", key, val, 100, extra) || expect_line(k, "EXISTS", "cas (stale unique)")) continue;
    check_value(k, key, val, 100, 1);
  }
  /* The state a --check-only run expects: every key not deleted holds its last round's value. */
  for (int i = 0; i < o->keys; ++i) {
    if (i % 7 == 3) continue;
    snprintf(key, sizeof key, "%s-%d-%d", o->prefix, k->id, i);
    long size = value_size(o, k->id, i);
    fill_value(val, key, o->rounds, size);
    if (store(k, "set", key, val, size, NULL) == 0) expect_line(k, "STORED", "final set");
  }
  free(val);
}

static void *conn_main(void *arg) {
  struct conn *k = arg;
  run_conn(k);
  return NULL;
}

static int connect_to(const char *host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void usage(FILE *f) {
  fprintf(f,
          "Usage: mc_load -p PORT [-H HOST] [-c CONNS] [-n KEYS] [-s MAX_SIZE] [-r ROUNDS] [-g GETS]\n"
          "               [-k PREFIX] [-w SECONDS] [-C] [-q]\n"
          "  -H HOST    IPv4 address (default 127.0.0.1)\n"
          "  -c CONNS   connections, one thread each (default 4)\n"
          "  -n KEYS    keys per connection (default 100)\n"
          "  -s SIZE    largest value in bytes (default 4096; sizes spread from 1 byte up)\n"
          "  -r ROUNDS  rounds over all keys (default 2)\n"
          "  -g GETS    checked gets per key and round (default 1; more makes a get-heavy load)\n"
          "  -k PREFIX  key prefix (default k)\n"
          "  -w SECONDS keep trying to connect this long (default 0: once)\n"
          "  -C         check only: read what a finished run with the same options left\n"
          "  -q         no per-error messages\n");
}

int main(int argc, char **argv) {
  struct options o = {"127.0.0.1", 0, 4, 100, 4096, 2, 1, "k", 0, 0, 0};
  int opt;
  while ((opt = getopt(argc, argv, "H:p:c:n:s:r:g:k:w:Cqh")) != -1) {
    switch (opt) {
      case 'H': o.host = optarg; break;
      case 'p': o.port = atoi(optarg); break;
      case 'c': o.conns = atoi(optarg); break;
      case 'n': o.keys = atoi(optarg); break;
      case 's': o.max_size = atol(optarg); break;
      case 'r': o.rounds = atoi(optarg); break;
      case 'g': o.gets = atoi(optarg); break;
      case 'k': o.prefix = optarg; break;
      case 'w': o.wait_s = atoi(optarg); break;
      case 'C': o.check_only = 1; break;
      case 'q': o.quiet = 1; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (o.port <= 0 || o.conns < 1 || o.keys < 1 || o.max_size < 1 || o.rounds < 1 || o.gets < 0) {
    usage(stderr);
    return 2;
  }
  struct conn *ks = calloc((size_t)o.conns, sizeof *ks);
  pthread_t *ts = calloc((size_t)o.conns, sizeof *ts);
  if (!ks || !ts) return 2;
  for (int i = 0; i < o.conns; ++i) {
    ks[i].id = i;
    ks[i].o = &o;
    ks[i].fd = connect_to(o.host, o.port);
    for (int tries = 0; ks[i].fd < 0 && tries < o.wait_s * 10; ++tries) {
      usleep(100000);
      ks[i].fd = connect_to(o.host, o.port);
    }
    if (ks[i].fd < 0) {
      fprintf(stderr, "mc_load: cannot connect to %s:%d: %s\n", o.host, o.port, strerror(errno));
      return 1;
    }
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < o.conns; ++i) pthread_create(&ts[i], NULL, conn_main, &ks[i]);
  struct counters sum = {0};
  for (int i = 0; i < o.conns; ++i) {
    pthread_join(ts[i], NULL);
    sum.ops += ks[i].c.ops;
    sum.hits += ks[i].c.hits;
    sum.misses += ks[i].c.misses;
    sum.mismatches += ks[i].c.mismatches;
    sum.errors += ks[i].c.errors;
    close(ks[i].fd);
    free(ks[i].rbuf);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("mc_load: conns=%d ops=%ld hits=%ld misses=%ld mismatches=%ld errors=%ld seconds=%.3f ops_per_sec=%.0f\n",
         o.conns, sum.ops, sum.hits, sum.misses, sum.mismatches, sum.errors, secs, secs > 0 ? sum.ops / secs : 0.0);
  free(ks);
  free(ts);
  return sum.mismatches || sum.errors ? 1 : 0;
}
