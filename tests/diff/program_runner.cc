// program_runner.cc - set-up, op execution and clean-up of one program.
#include "program_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "area.h"
#include "op_thread.h"
#include "outcome_hash.h"
#include "probe.h"

namespace mpkdiff {
namespace {

constexpr int kRW = PROT_READ | PROT_WRITE;
constexpr uint64_t kMaxIo = 8192;  // below the pipe's capacity: a pipe read or write never blocks

[[noreturn]] void fatal(const char *what) {
  std::fprintf(stderr, "mpk_diff: fatal: %s: %s\n", what, std::strerror(errno));
  std::fflush(stdout);
  _exit(3);
}

std::string errno_text(int err) {
  const char *name = strerrorname_np(err);
  return name ? name : "errno " + std::to_string(err);
}

std::string rc_text(long rc) {
  if (rc >= 0) return std::to_string(rc);
  return "-1 " + errno_text(errno);
}

std::string position_of(uintptr_t addr) {
  if (!Area::contains(addr)) return "outside the reservation";
  uint64_t off = addr - Area::kBase;
  char buf[48];
  std::snprintf(buf, sizeof buf, "p%llu+%llu", static_cast<unsigned long long>(off / kPage),
                static_cast<unsigned long long>(off % kPage));
  return buf;
}

std::string probe_text(const ProbeResult &r, bool load) {
  char buf[96];
  if (!r.faulted) {
    if (load) std::snprintf(buf, sizeof buf, "ok 0x%02x", r.value);
    else std::snprintf(buf, sizeof buf, "ok");
    return buf;
  }
  const char *code = nullptr;
  if (r.signo == SIGSEGV) {
    code = r.code == SEGV_MAPERR ? "MAPERR" : r.code == SEGV_ACCERR ? "ACCERR" : r.code == SEGV_PKUERR ? "PKUERR" : nullptr;
  } else if (r.signo == SIGBUS) {
    code = r.code == BUS_ADRERR ? "ADRERR" : r.code == BUS_ADRALN ? "ADRALN" : nullptr;
  }
  std::string c = code ? code : "code " + std::to_string(r.code);
  return std::string(r.signo == SIGSEGV ? "SIGSEGV " : "SIGBUS ") + c + " at " + position_of(r.addr);
}

// The byte set-up stores at (page, offset) of a region, and that a file holds there.
uint8_t pattern(uint64_t seed, int region, uint32_t page, uint32_t offset) {
  uint64_t key[3] = {seed, static_cast<uint64_t>(region) << 32 | page, offset};
  return static_cast<uint8_t>(fnv1a(key, sizeof key) | 1);
}

// Offsets of each page that set-up initialises (the probes use 0, 1, 2048 and 4095).
constexpr uint32_t kPatternOffsets[] = {0, 1, 2, 3, 64, 65, 2048, 4000, 4095};

void drain(int fd, std::string *into) {
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      if (into) into->append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return;  // EAGAIN: empty
  }
}

}  // namespace

// Files backing the current program's file regions; closed when the program ends.
struct ProgramRunner::ProgramFiles {
  std::vector<int> fds;
  ~ProgramFiles() {
    for (int fd : fds) close(fd);
  }
};

ProgramRunner::ProgramRunner() {
  if (sysconf(_SC_PAGESIZE) != static_cast<long>(kPage)) {
    errno = EINVAL;
    fatal("the page size is not 4096");
  }
  install_fault_handlers();
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) fatal("pipe2");
  pipe_read_ = p[0];
  pipe_write_ = p[1];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) fatal("pipe2");  // a killed child leaves it empty
  child_read_ = p[0];
  child_write_ = p[1];
  if (!Area::reserve()) fatal("reserving the address range for programs");
}

ProgramRunner::~ProgramRunner() {
  Area::release();
  for (int fd : {pipe_read_, pipe_write_, child_read_, child_write_}) close(fd);
}

bool ProgramRunner::map_region(int index, const RegionSpec &r, ProgramFiles &files, std::string &outcome) {
  void *at = Area::at(r.first_page * kPage);
  size_t len = r.pages * kPage;
  if (r.kind == RegionKind::kAnonPrivate || r.kind == RegionKind::kAnonShared) {
    int share = r.kind == RegionKind::kAnonShared ? MAP_SHARED : MAP_PRIVATE;
    void *p = mmap(at, len, kRW, share | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) {
      outcome = rc_text(-1);
      return false;
    }
    for (uint32_t page = 0; page < r.pages; ++page)
      for (uint32_t off : kPatternOffsets)
        static_cast<uint8_t *>(p)[page * kPage + off] = pattern(seed_, index, page, off);
    outcome = "ok";
    return true;
  }
  // A file of its own, filled with the pattern, opened the way the region kind says, unlinked.
  const char *dir = getenv("TMPDIR");
  std::string path = std::string(dir && *dir ? dir : "/tmp") + "/mpk_diff.XXXXXX";
  int rw = mkstemp(path.data());
  if (rw < 0) fatal("creating a temporary file (set TMPDIR to a writable folder)");
  std::vector<uint8_t> page_buf(kPage);
  for (uint32_t page = 0; page < r.file_pages; ++page) {
    std::memset(page_buf.data(), 0, kPage);
    for (uint32_t off : kPatternOffsets) page_buf[off] = pattern(seed_, index, page, off);
    if (pwrite(rw, page_buf.data(), kPage, page * kPage) != static_cast<ssize_t>(kPage)) fatal("writing a temporary file");
  }
  int fd = rw;
  if (r.kind != RegionKind::kFileSharedRw) {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fatal("opening a temporary file read-only");
    close(rw);
  }
  unlink(path.c_str());
  files.fds.push_back(fd);
  int share = r.kind == RegionKind::kFilePrivateRo ? MAP_PRIVATE : MAP_SHARED;
  void *p = mmap(at, len, r.prot, share | MAP_FIXED, fd, 0);
  outcome = p == MAP_FAILED ? rc_text(-1) : "ok";
  return p != MAP_FAILED;
}

std::string ProgramRunner::run(const Program &program, const LineSink &sink) {
  std::string log;
  auto emit = [&](std::string line) {
    line += '\n';
    if (sink) sink(line);
    log += line;
  };
  seed_ = program.seed;
  char header[160];
  std::snprintf(header, sizeof header, "== seed %llu: %d thread(s), %zu region(s), %zu ops%s",
                static_cast<unsigned long long>(program.seed), program.threads, program.regions.size(),
                program.ops.size(), program.kind == ProgramKind::kSubRange ? ", sub-range program" : "");
  emit(header);

  // Holes must be real holes, so the reservation goes away while the program runs.
  if (!Area::release()) fatal("unmapping the reservation before a program");

  ProgramFiles files;
  for (size_t i = 0; i < program.regions.size(); ++i) {
    const RegionSpec &r = program.regions[i];
    std::string outcome;
    bool mapped = map_region(static_cast<int>(i), r, files, outcome);
    bool file = r.kind != RegionKind::kAnonPrivate && r.kind != RegionKind::kAnonShared;
    emit("setup " + describe_region(static_cast<int>(i), r) + " " + prot_name(file ? r.prot : kRW) + " -> " + outcome);
    if (mapped && !file && r.prot != kRW) {
      long rc = mprotect(Area::at(r.first_page * kPage), r.pages * kPage, r.prot);
      emit("setup r" + std::to_string(i) + " mprotect " + prot_name(r.prot) + " -> " + rc_text(rc));
    }
  }

  sigset_t saved_mask;
  sigprocmask(SIG_SETMASK, nullptr, &saved_mask);
  std::vector<std::unique_ptr<OpThread>> workers;
  for (int t = 1; t < program.threads; ++t) {
    workers.push_back(std::make_unique<OpThread>());
    if (int err = workers.back()->start(this)) {
      errno = err;
      fatal("pthread_create");
    }
  }

  for (size_t i = 0; i < program.ops.size(); ++i) {
    const Op &op = program.ops[i];
    std::string text = describe_op(op);
    set_running_op(text.c_str());
    std::string outcome = op.thread == 0 ? execute(op) : workers[op.thread - 1]->run(op);
    char index[24];
    std::snprintf(index, sizeof index, "%3zu ", i);
    emit(index + text + " -> " + outcome);
  }
  set_running_op("(between ops)");

  for (auto &w : workers) {
    if (int err = w->stop()) {
      errno = err;
      fatal("pthread_join");
    }
  }
  sigprocmask(SIG_SETMASK, &saved_mask, nullptr);  // a kSigmask op may have changed the main thread's

  // Everything the program mapped is inside the reservation: one munmap removes it all.
  errno = 0;
  bool released = Area::release();
  emit(std::string("cleanup munmap of the reservation -> ") + (released ? "0" : rc_text(-1)));
  if (!released) fatal("unmapping a program's mappings");
  if (!Area::reserve()) fatal("reserving the address range again after a program");
  return log;
}

std::string ProgramRunner::execute(const Op &op) {
  char *addr = Area::at(op.addr);
  switch (op.kind) {
    case OpKind::kMprotect:
      return rc_text(mprotect(addr, op.len, op.prot));
    case OpKind::kMunmap:
      return rc_text(munmap(addr, op.len));
    case OpKind::kMremap: {
      void *p = mremap(addr, op.len, op.new_len, op.flags, Area::at(op.new_addr));
      if (p == MAP_FAILED) return rc_text(-1);
      const char *expected = (op.flags & MREMAP_FIXED) ? Area::at(op.new_addr) : addr;
      if (p == expected) return "ok";
      std::string where = position_of(reinterpret_cast<uintptr_t>(p));
      if (!Area::contains(reinterpret_cast<uintptr_t>(p))) munmap(p, op.new_len);  // never leak it
      return "ok, but moved to " + where;
    }
    case OpKind::kMmapFixed: {
      void *p = mmap(addr, op.len, op.prot, op.flags, -1, 0);
      if (p == MAP_FAILED) return rc_text(-1);
      if (p == addr) return "ok";
      std::string where = position_of(reinterpret_cast<uintptr_t>(p));
      if (!Area::contains(reinterpret_cast<uintptr_t>(p))) munmap(p, op.len);
      return "ok, but at " + where;
    }
    case OpKind::kProbeRead:
      return probe_text(probe_load(addr), true);
    case OpKind::kProbeWrite:
      return probe_text(probe_store(addr, op.value), false);
    case OpKind::kSysRead: {
      // Fill the pipe first: the read then copies len bytes (or fewer, up to a fault) at once.
      uint8_t src[kMaxIo];
      size_t len = op.len < kMaxIo ? op.len : kMaxIo;
      for (size_t i = 0; i < len; ++i) src[i] = static_cast<uint8_t>(op.addr * 7 + i * 13 + 1);
      if (write(pipe_write_, src, len) != static_cast<ssize_t>(len)) fatal("filling the pipe");
      errno = 0;
      long rc = read(pipe_read_, addr, len);
      std::string outcome = rc_text(rc);
      drain(pipe_read_, nullptr);
      return outcome;
    }
    case OpKind::kSysWrite: {
      size_t len = op.len < kMaxIo ? op.len : kMaxIo;
      long rc = write(pipe_write_, addr, len);
      std::string outcome = rc_text(rc);
      std::string data;
      drain(pipe_read_, &data);
      if (data.empty()) return outcome + ", nothing piped";
      char buf[48];  // what reached the pipe: checks the data as well as the count
      std::snprintf(buf, sizeof buf, ", piped %zu digest %08x", data.size(), static_cast<unsigned>(fnv1a(data)));
      return outcome + buf;
    }
    case OpKind::kFork: {
      pid_t pid = fork();
      if (pid < 0) return rc_text(-1);
      if (pid == 0) {
        // The child has only this thread; it reports the probe through the pipe and leaves
        // without running any exit handlers of the parent's.
        ProbeResult r = op.write ? probe_store(addr, op.value) : probe_load(addr);
        ssize_t ignored = write(child_write_, &r, sizeof r);
        (void)ignored;
        _exit(0);
      }
      int status = 0;
      while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) fatal("waitpid");
      }
      ProbeResult r;
      bool got = read(child_read_, &r, sizeof r) == static_cast<ssize_t>(sizeof r);
      std::string child = got ? probe_text(r, !op.write) : "no report";
      char buf[64];
      if (WIFEXITED(status)) std::snprintf(buf, sizeof buf, ", exit %d", WEXITSTATUS(status));
      else std::snprintf(buf, sizeof buf, ", killed by signal %d", WTERMSIG(status));
      return "child " + child + buf;
    }
    case OpKind::kSigmask: {
      sigset_t set;
      sigfillset(&set);
      // A synchronous SIGSEGV/SIGBUS that is blocked kills the process: keep them open.
      sigdelset(&set, SIGSEGV);
      sigdelset(&set, SIGBUS);
      return rc_text(sigprocmask(op.write ? SIG_BLOCK : SIG_UNBLOCK, &set, nullptr));
    }
  }
  return "?";
}

}  // namespace mpkdiff
