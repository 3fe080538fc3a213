// op_thread.h - a worker thread that executes the ops handed to it, one at a time.
//
// The caller blocks in run() until the op is done, so at most one thread of a program is ever
// executing an op. The hand-over is a pair of semaphores: sem_post/sem_wait order the op's
// memory effects and outcome before the caller continues.
#pragma once

#include <pthread.h>
#include <semaphore.h>

#include <string>

#include "program.h"

namespace mpkdiff {

class ProgramRunner;

class OpThread {
 public:
  OpThread() = default;
  OpThread(const OpThread &) = delete;
  OpThread &operator=(const OpThread &) = delete;

  // Creates the thread with pthread_create. Returns its error number (0 on success).
  int start(ProgramRunner *runner);
  // Executes `op` on this thread and returns its outcome.
  std::string run(const Op &op);
  // Ends the thread and joins it. Returns pthread_join's error number.
  int stop();

 private:
  static void *main(void *self);

  ProgramRunner *runner_ = nullptr;
  pthread_t thread_{};
  sem_t go_{}, done_{};
  const Op *op_ = nullptr;  // nullptr asks the thread to end
  std::string outcome_;
};

}  // namespace mpkdiff
