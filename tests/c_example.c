/* c_example.c - libmpk from C11, through <mpk.h> alone.
 *
 * Puts a secret in a page group that is closed by default, opens it for the whole process to
 * read it, opens it for this thread alone to change it, keeps a small record in a per-group
 * heap, and cleans up. System calls stand in for faulting accesses: the kernel honours the
 * thread's rights, so write(2) from a page this thread may not read fails with EFAULT.
 *
 * Exit status: 0 success, 1 a failed expectation, 77 the CPU or kernel has no protection keys.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <mpk.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int failures;

#define EXPECT(cond, what)                                                        \
  do {                                                                            \
    if (cond) {                                                                   \
      printf("  ok    %s\n", what);                                               \
    } else {                                                                      \
      printf("  FAIL  %s (errno %d: %s)\n", what, errno, strerror(errno));        \
      failures++;                                                                 \
    }                                                                             \
  } while (0)

/* 1 when this thread may read the byte at p, judged by the kernel: write(2) from it. */
static int kernel_can_read(int pipe_w, int pipe_r, const void *p) {
  if (write(pipe_w, p, 1) != 1) return 0;
  char c;
  return read(pipe_r, &c, 1) == 1;
}

int main(void) {
  enum { SECRET = 1, NOTES = 2 };
  const size_t page = 4096;
  int fds[2];

  setvbuf(stdout, NULL, _IONBF, 0);
  printf("mpk_init(100): initialise libmpk, evicting on every key-cache miss\n");
  if (mpk_init(100) != 0) {
    if (errno == ENOTSUP) {
      printf("  skip  this CPU or kernel has no memory protection keys (ENOTSUP)\n");
      return 77;
    }
    printf("  FAIL  mpk_init: %s\n", strerror(errno));
    return 1;
  }
  if (pipe(fds) != 0) {
    perror("pipe");
    return 1;
  }

  printf("mpk_mmap(%d): one read/write page; a new group is closed\n", SECRET);
  char *secret = mpk_mmap(SECRET, NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                          -1, 0);
  EXPECT(secret != MAP_FAILED, "mpk_mmap returned a page");
  if (secret == MAP_FAILED) return 1;
  EXPECT(!kernel_can_read(fds[1], fds[0], secret), "the new group is closed (write(2) from it fails)");
  EXPECT(errno == EFAULT, "... with EFAULT");

  printf("mpk_begin(%d, READ|WRITE): this thread alone may write\n", SECRET);
  EXPECT(mpk_begin(SECRET, PROT_READ | PROT_WRITE) == 0, "mpk_begin");
  strcpy(secret, "swordfish");
  EXPECT(strcmp(secret, "swordfish") == 0, "wrote the secret inside the domain");
  printf("mpk_end(%d): back to the process-wide right (closed)\n", SECRET);
  EXPECT(mpk_end(SECRET) == 0, "mpk_end");
  EXPECT(!kernel_can_read(fds[1], fds[0], secret), "closed again after mpk_end");

  printf("mpk_mprotect(%d, READ): every thread may read, nobody may write\n", SECRET);
  EXPECT(mpk_mprotect(SECRET, PROT_READ) == 0, "mpk_mprotect READ");
  EXPECT(kernel_can_read(fds[1], fds[0], secret), "readable by the kernel on our behalf");
  EXPECT(strcmp(secret, "swordfish") == 0, "the secret reads back");
  printf("  the secret is \"%s\"\n", secret);
  EXPECT(write(fds[1], "x", 1) == 1 && read(fds[0], secret, 1) == -1 && errno == EFAULT,
         "read(2) into the read-only group fails with EFAULT");
  { char c; (void)!read(fds[0], &c, 1); } /* drain the byte the failed read left */

  printf("mpk_begin(%d, PROT_EXEC): execute cannot be thread-local\n", SECRET);
  errno = 0;
  EXPECT(mpk_begin(SECRET, PROT_READ | PROT_EXEC) == -1 && errno == EINVAL, "EINVAL");
  printf("mpk_mmap(%d, READ) then mpk_mprotect beyond the ceiling\n", NOTES + 1);
  void *ro = mpk_mmap(NOTES + 1, NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT(ro != MAP_FAILED, "mpk_mmap read-only group");
  errno = 0;
  EXPECT(mpk_mprotect(NOTES + 1, PROT_READ | PROT_WRITE) == -1 && errno == EACCES, "EACCES");

  printf("mpk_malloc(%d, 64): a record in the group's own heap\n", NOTES);
  char *note = mpk_malloc(NOTES, 64);
  EXPECT(note != NULL, "mpk_malloc");
  if (note == NULL) return 1;
  EXPECT(((size_t)note & 15) == 0, "16-byte aligned");
  EXPECT(!kernel_can_read(fds[1], fds[0], note), "the new heap group is closed");
  EXPECT(mpk_begin(NOTES, PROT_READ | PROT_WRITE) == 0, "mpk_begin on the heap group");
  snprintf(note, 64, "the secret has %zu letters", strlen(secret));
  printf("  note: \"%s\"\n", note);
  EXPECT(mpk_end(NOTES) == 0, "mpk_end");
  printf("mpk_free(%d, note): works while the group is closed\n", NOTES);
  mpk_free(NOTES, note);
  printf("mpk_free(%d, note) again: a double free is reported and refused\n", NOTES);
  errno = 0;
  mpk_free(NOTES, note);
  EXPECT(errno == EINVAL, "double free -> EINVAL");
  char *again = mpk_malloc(NOTES, 32);
  EXPECT(again != NULL, "the heap still works after the refused free");
  mpk_free(NOTES, again);

  printf("mpk_munmap: unmap every group and forget the vkeys\n");
  EXPECT(mpk_munmap(SECRET) == 0, "mpk_munmap secret");
  EXPECT(mpk_munmap(NOTES) == 0, "mpk_munmap notes");
  EXPECT(mpk_munmap(NOTES + 1) == 0, "mpk_munmap read-only group");
  errno = 0;
  EXPECT(mpk_mprotect(SECRET, PROT_READ) == -1 && errno == EINVAL, "a forgotten vkey is EINVAL");
  unsigned char vec;
  EXPECT(mincore(secret, page, &vec) == -1 && errno == ENOMEM, "the page is unmapped");

  close(fds[0]);
  close(fds[1]);
  printf("%s\n", failures ? "FAILED" : "all expectations met");
  return failures ? 1 : 0;
}
