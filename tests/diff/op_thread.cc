// op_thread.cc - the hand-over of ops between the main thread and a worker.
#include "op_thread.h"

#include <cerrno>

#include "program_runner.h"

namespace mpkdiff {
namespace {

// A signal (the shim updates other threads' rights with one) interrupts sem_wait with EINTR
// even under SA_RESTART: wait again.
void wait_for(sem_t *sem) {
  while (sem_wait(sem) != 0 && errno == EINTR) {
  }
}

}  // namespace

int OpThread::start(ProgramRunner *runner) {
  runner_ = runner;
  sem_init(&go_, 0, 0);
  sem_init(&done_, 0, 0);
  return pthread_create(&thread_, nullptr, &OpThread::main, this);
}

std::string OpThread::run(const Op &op) {
  op_ = &op;
  sem_post(&go_);
  wait_for(&done_);
  return std::move(outcome_);
}

int OpThread::stop() {
  op_ = nullptr;
  sem_post(&go_);
  int rc = pthread_join(thread_, nullptr);
  sem_destroy(&go_);
  sem_destroy(&done_);
  return rc;
}

void *OpThread::main(void *self) {
  auto *t = static_cast<OpThread *>(self);
  for (;;) {
    wait_for(&t->go_);
    if (!t->op_) return nullptr;
    t->outcome_ = t->runner_->execute(*t->op_);
    sem_post(&t->done_);
  }
}

}  // namespace mpkdiff
