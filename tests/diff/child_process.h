// child_process.h - a child process (fork + execve) whose standard output is read through a pipe.
//
// Standard error is inherited, so whatever a child or a preloaded library prints there reaches
// the user as it happens.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace mpkdiff {

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(ChildProcess &&other) noexcept;
  ChildProcess &operator=(ChildProcess &&other) noexcept;
  ~ChildProcess();

  // Starts argv[0] with exactly the environment `env`. False (errno set) if it could not start.
  bool spawn(const std::vector<std::string> &argv, const std::vector<std::string> &env);

  int fd() const { return fd_; }
  // Reads what the pipe holds into output(). False at end of file.
  bool read_some();
  // Kills the child (SIGKILL).
  void kill();
  // Reaps the child; returns its wait status.
  int wait();

  std::string &output() { return output_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string output_;
};

struct ChildRun {
  std::string output;
  int status = 0;        // wait status
  bool timed_out = false;
  bool started = false;
};

// Runs a child to completion (or kills it after timeout_s seconds) and collects its output.
ChildRun run_child(const std::vector<std::string> &argv, const std::vector<std::string> &env, int timeout_s);

// "exited with status 3", "killed by signal 11 (Segmentation fault)".
std::string describe_status(int status);

}  // namespace mpkdiff
