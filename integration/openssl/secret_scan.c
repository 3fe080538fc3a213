/* mpk_secret_scan PID NEEDLES: where in a running process's memory given byte strings are.
 *
 * Reads every mapping of process PID through /proc/PID/mem (from outside: protection keys do not
 * apply to another process's access) and prints one line per occurrence of each needle:
 *   hit NAME 0xADDRESS key=K PERMS PATH
 * where K is the mapping's ProtectionKey in /proc/PID/smaps (-1 when the kernel shows none).
 * NEEDLES is a text file of lines "NAME HEX" (the bytes in memory order). Ends with
 *   scanned BYTES bytes in N mappings
 * Exit status 0, or 2 on bad usage or an unreadable process. For the OpenSSL key tests
 * (integration/openssl): the secret numbers of a server's private keys must all sit in memory on
 * the policy region's key.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_NEEDLES 64
#define MAX_MAPS 8192

struct needle {
  char name[64];
  unsigned char *bytes;
  size_t len;
};
struct mapping {
  unsigned long lo, hi;
  char perms[8];
  char path[512];
  int key;
};

static struct needle needles[MAX_NEEDLES];
static int nneedles;
static struct mapping maps[MAX_MAPS];
static int nmaps;

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_needles(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[8192];
  while (nneedles < MAX_NEEDLES && fgets(line, sizeof line, f)) {
    char name[64], hex[8000];
    if (sscanf(line, "%63s %7999s", name, hex) != 2) continue;
    size_t n = strlen(hex) / 2;
    struct needle *nd = &needles[nneedles];
    nd->bytes = malloc(n);
    for (size_t i = 0; i < n; ++i) nd->bytes[i] = (unsigned char)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    nd->len = n;
    snprintf(nd->name, sizeof nd->name, "%s", name);
    if (n) ++nneedles;
  }
  fclose(f);
  return 0;
}

static int read_maps(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/smaps", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[1024];
  struct mapping *cur = NULL;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    char perms[8];
    int pos = 0;
    if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &pos) == 3 && pos) {
      if (nmaps == MAX_MAPS) break;
      cur = &maps[nmaps++];
      cur->lo = lo;
      cur->hi = hi;
      snprintf(cur->perms, sizeof cur->perms, "%s", perms);
      line[strcspn(line, "\n")] = 0;
      snprintf(cur->path, sizeof cur->path, "%s", line + pos);
      cur->key = -1;
    } else if (cur && !strncmp(line, "ProtectionKey:", 14)) {
      cur->key = atoi(line + 14);
    }
  }
  fclose(f);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s PID NEEDLES\n", argv[0]);
    return 2;
  }
  int pid = atoi(argv[1]);
  if (read_needles(argv[2]) != 0 || read_maps(pid) != 0) {
    perror("mpk_secret_scan");
    return 2;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/mem", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    perror(path);
    return 2;
  }
  unsigned long long scanned = 0;
  int nscanned = 0;
  for (int i = 0; i < nmaps; ++i) {
    struct mapping *m = &maps[i];
    if (m->perms[0] == '-' && m->key <= 0) continue; /* PROT_NONE reservations: nothing there */
    if (!strcmp(m->path, "[vvar]") || !strcmp(m->path, "[vsyscall]")) continue;
    size_t len = m->hi - m->lo;
    unsigned char *buf = malloc(len);
    if (!buf) continue;
    ssize_t got = pread(fd, buf, len, (off_t)m->lo);
    if (got <= 0) {
      free(buf);
      continue;
    }
    scanned += (unsigned long long)got;
    ++nscanned;
    for (int n = 0; n < nneedles; ++n) {
      const unsigned char *p = buf, *end = buf + got;
      while (p < end) {
        const unsigned char *hit = memmem(p, (size_t)(end - p), needles[n].bytes, needles[n].len);
        if (!hit) break;
        printf("hit %s 0x%lx key=%d %s %s\n", needles[n].name, m->lo + (unsigned long)(hit - buf), m->key, m->perms,
               m->path[0] ? m->path : "[anon]");
        p = hit + 1;
      }
    }
    free(buf);
  }
  printf("scanned %llu bytes in %d mappings\n", scanned, nscanned);
  return 0;
}
