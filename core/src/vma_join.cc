#include "vma_join.h"

#include <sys/mman.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "proc_maps.h"
#include "sys.h"
#include "tag_bounds.h"

namespace mpk {

namespace {

constexpr int kMaxPieces = 32;
constexpr size_t kPage = 4096;

// A VMA the range touches (proc_maps.h).
using Piece = SmapsVma;

// Flags under which a piece is left alone: memory the kernel may not grow (VM_DONTEXPAND), huge
// pages, device memory, userfaultfd-registered and locked memory.
bool refuses_join(const char *flags) {
  static const char *const kRefused[] = {"de", "ht", "io", "pf", "um", "uw", "lo", "lf"};
  for (const char *p = flags; *p;) {
    while (*p == ' ') ++p;
    const char *word = p;
    while (*p && *p != ' ') ++p;
    if (p - word != 2) continue;
    for (const char *r : kRefused)
      if (word[0] == r[0] && word[1] == r[1]) return true;
  }
  return false;
}

// One page of this process's memory through the kernel: a page it cannot give (a file page past
// the end of its file) is an error here instead of a SIGBUS.
bool copy_page(void *to, const void *from, bool write) {
  struct iovec local{write ? const_cast<void *>(from) : to, kPage}, remote{write ? to : const_cast<void *>(from), kPage};
  long rc = sys::raw(write ? SYS_process_vm_writev : SYS_process_vm_readv, sys::getpid(), (long)&local, 1,
                     (long)&remote, 1, 0);
  if (rc == static_cast<long>(kPage)) return true;
  if (rc == -EFAULT) return false;
  std::memcpy(to, from, kPage);  // refused (a sandbox may forbid the call): an ordinary copy
  return true;
}

bool page_is_zero(const unsigned char *p) {
  const auto *w = reinterpret_cast<const uint64_t *>(p);
  for (size_t i = 0; i < kPage / sizeof(uint64_t); ++i)
    if (w[i]) return false;
  return true;
}

// The VMAs that [start, end) touches, in address order. False if there are more than fit, a hole,
// or the file cannot be read.
bool read_pieces(uintptr_t start, uintptr_t end, Piece *out, int *n) {
  *n = 0;
  bool fits = true;
  uintptr_t want = start;
  bool ok = for_each_smaps_vma(start, end, [&](const SmapsVma &v) {
    if (v.lo > want || *n == kMaxPieces) return fits = false;  // a hole, or too many pieces
    out[(*n)++] = v;
    want = v.hi;
    return true;
  });
  return ok && fits && want >= end;
}

// Would the kernel have merged these pieces, anon_vma aside?
bool one_vma_but_for_anon_vma(const Piece *p, int n) {
  if (n < 2) return false;
  for (int i = 0; i < n; ++i) {
    // Executable pieces are left alone: the copy would have to make them writable first, which
    // W^X policies refuse. So are pieces on a key (the program's own: the engine's are cleared).
    if (!(p[i].anon_private || p[i].file_private) || p[i].perms[2] == 'x' || p[i].pkey != 0 || !p[i].flags[0] ||
        refuses_join(p[i].flags))
      return false;
    if (i == 0) continue;
    if (std::memcmp(p[i].perms, p[0].perms, 4) != 0 || std::strcmp(p[i].flags, p[0].flags) != 0) return false;
    if (p[i].lo != p[i - 1].hi || p[i].anon_private != p[0].anon_private) return false;
    // A file's pieces: the same file at contiguous offsets. Anonymous memory shows offset 0 (the
    // kernel keeps its page offset to itself), so there only adjacency is checked.
    if (p[i].file_private &&
        (p[i].dev != p[0].dev || p[i].inode != p[0].inode || p[i].offset != p[i - 1].offset + (p[i - 1].hi - p[i - 1].lo)))
      return false;
    // A cut the engine's tagging did not make is the program's own, there natively too.
    if (!is_tag_bound(p[i].lo)) return false;
  }
  return true;
}

// Moves pieces [1, moved] back from the scratch area to where they were.
void move_back(const Piece *p, int moved, uintptr_t scratch) {
  for (int i = 1; i <= moved; ++i) {
    size_t len = p[i].hi - p[i].lo;
    sys::mremap(reinterpret_cast<void *>(scratch + (p[i].lo - p[1].lo)), len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
                reinterpret_cast<void *>(p[i].lo));
  }
}

}  // namespace

bool join_anon_pieces(uintptr_t start, size_t len) {
  Piece p[kMaxPieces];
  int n = 0;
  if (!len || !read_pieces(start, start + len, p, &n) || !one_vma_but_for_anon_vma(p, n)) return false;

  // Order: the later pieces move aside (contents and all) into one reservation, the first grows
  // over the space they left, their contents are copied in, and only then is the reservation
  // dropped. Until the growth succeeds every step can be undone.
  const uintptr_t lo = p[0].lo, hi = p[n - 1].hi, rest = hi - p[1].lo;
  void *res = sys::mmap(nullptr, rest, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (sys::mmap_failed(res)) return false;
  const auto scratch = reinterpret_cast<uintptr_t>(res);
  for (int i = 1; i < n; ++i) {
    size_t plen = p[i].hi - p[i].lo;
    void *r = sys::mremap(reinterpret_cast<void *>(p[i].lo), plen, plen, MREMAP_MAYMOVE | MREMAP_FIXED,
                          reinterpret_cast<void *>(scratch + (p[i].lo - p[1].lo)));
    if (sys::mmap_failed(r)) {
      move_back(p, i - 1, scratch);
      sys::munmap(res, rest);
      return false;
    }
  }
  void *grown = sys::mremap(reinterpret_cast<void *>(lo), p[0].hi - lo, hi - lo, 0, nullptr);
  if (grown != reinterpret_cast<void *>(lo)) {
    move_back(p, n - 1, scratch);
    sys::munmap(res, rest);
    return false;
  }
  // The grown part shows zeros (anonymous memory) or the file's pages at the same offsets; the
  // pages that hold anything else are copied in, so untouched pages stay untouched and unchanged
  // file pages stay the file's. Both sides are opened for the copy and the grown part gets the
  // pieces' permission back, which merges it into the first piece (they share its anon_vma).
  const int prot = prot_of_perms(p[0].perms);
  const bool file = p[0].file_private;
  auto *dst = reinterpret_cast<unsigned char *>(p[1].lo);
  auto *src = reinterpret_cast<unsigned char *>(scratch);
  sys::mprotect(res, rest, PROT_READ);
  sys::mprotect(dst, rest, PROT_READ | PROT_WRITE);
  unsigned char was[kPage], now[kPage];
  for (size_t off = 0; off < rest; off += kPage) {
    if (!copy_page(was, src + off, false)) continue;  // past the end of the file: nothing there
    if (file ? copy_page(now, dst + off, false) && std::memcmp(was, now, kPage) == 0 : page_is_zero(was)) continue;
    copy_page(dst + off, was, true);
  }
  sys::mprotect(dst, rest, prot);
  sys::munmap(res, rest);
  return true;
}

}  // namespace mpk
