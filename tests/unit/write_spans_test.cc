// Which parts of a thread-toggled group each thread has open for writing (write_spans.h).
#include "write_spans.h"

#include <gtest/gtest.h>

#include <memory>

namespace mpk {
namespace {

constexpr uintptr_t kLo = 0x100000, kHi = kLo + 64 * 4096;
uintptr_t page(int n) { return kLo + static_cast<uintptr_t>(n) * 4096; }

TEST(WriteSpans, TheLastClosedPartTakesWriteAway) {
  auto w = std::make_unique<WriteSpans>();
  w->open(1, 101, page(0), page(1), kLo, kHi);   // a page in the first half
  w->open(1, 101, page(32), page(33), kLo, kHi); // and one in the second
  int32_t lost[WriteSpans::kMax][2];
  EXPECT_EQ(w->close(page(32), page(64), lost, WriteSpans::kMax), 0);  // second half: one still open
  EXPECT_TRUE(w->holds(1, 101));
  ASSERT_EQ(w->close(page(0), page(32), lost, WriteSpans::kMax), 1);   // first half: the last one
  EXPECT_EQ(lost[0][0], 1);
  EXPECT_EQ(lost[0][1], 101);
  EXPECT_FALSE(w->holds(1, 101));
}

TEST(WriteSpans, ClosingTheMiddleKeepsBothEnds) {
  auto w = std::make_unique<WriteSpans>();
  w->open(2, 202, page(0), page(10), kLo, kHi);
  int32_t lost[WriteSpans::kMax][2];
  EXPECT_EQ(w->close(page(3), page(5), lost, WriteSpans::kMax), 0);
  EXPECT_EQ(w->close(page(0), page(3), lost, WriteSpans::kMax), 0);  // [5, 10) is still open
  EXPECT_EQ(w->close(page(5), page(10), lost, WriteSpans::kMax), 1);
  EXPECT_FALSE(w->holds(2, 202));
}

TEST(WriteSpans, ThreadsAreTheirRecordAndTid) {
  auto w = std::make_unique<WriteSpans>();
  w->open(3, 303, page(0), page(1), kLo, kHi);
  EXPECT_FALSE(w->holds(3, 304));  // the record reused by another thread holds nothing
  w->open(4, 404, page(0), page(1), kLo, kHi);
  int32_t lost[WriteSpans::kMax][2];
  EXPECT_EQ(w->close(page(0), page(1), lost, WriteSpans::kMax), 2);  // closed for everyone
}

TEST(WriteSpans, AFullTableFoldsTheThreadIntoTheWholeGroup) {
  auto w = std::make_unique<WriteSpans>();
  for (int i = 0; i < WriteSpans::kMax; ++i) w->open(5, 505, page(i % 64), page(i % 64) + 4096, kLo, kHi);
  w->open(6, 606, page(0), page(1), kLo, kHi);  // full: 606's one span becomes the whole group
  int32_t lost[WriteSpans::kMax][2];
  EXPECT_EQ(w->close(page(0), page(1), lost, WriteSpans::kMax), 0);  // both still hold something
  EXPECT_TRUE(w->holds(6, 606));
  EXPECT_TRUE(w->holds(5, 505));
  EXPECT_EQ(w->close(kLo, kHi, lost, WriteSpans::kMax), 2);  // the whole group closes both
}

}  // namespace
}  // namespace mpk

namespace mpk {
namespace {

TEST(WriteSpans, OverflowKeepsEveryWriterUntilTheWholeGroupCloses) {
  auto w = std::make_unique<WriteSpans>();
  for (int t = 0; t < WriteSpans::kMax; ++t) w->open(t, 1000 + t, page(t % 64), page(t % 64) + 4096, kLo, kHi);
  w->open(WriteSpans::kMax, 9999, page(0), page(1), kLo, kHi);  // one thread too many
  EXPECT_TRUE(w->holds(WriteSpans::kMax, 9999));
  int32_t lost[WriteSpans::kMax][2];
  EXPECT_EQ(w->close(page(0), page(32), lost, WriteSpans::kMax), 0);  // part: nobody loses write
  EXPECT_TRUE(w->holds(0, 1000));
  EXPECT_EQ(w->close(kLo, kHi, lost, WriteSpans::kMax), WriteSpans::kEveryone);
  EXPECT_FALSE(w->holds(0, 1000));
  EXPECT_FALSE(w->holds(WriteSpans::kMax, 9999));
}

}  // namespace
}  // namespace mpk

namespace mpk {
namespace {

TEST(WriteSpans, AForkChildKeepsOnlyTheForkingThreadsParts) {
  auto w = std::make_unique<WriteSpans>();
  w->open(1, 100, page(0), page(1), kLo, kHi);  // the forking thread
  w->open(2, 200, page(2), page(3), kLo, kHi);  // a thread the child does not have
  w->after_fork(1, 150);
  EXPECT_TRUE(w->holds(1, 150));
  EXPECT_FALSE(w->holds(1, 100));
  EXPECT_FALSE(w->holds(2, 200));
  int32_t lost[WriteSpans::kMax][2];
  ASSERT_EQ(w->close(kLo, kHi, lost, WriteSpans::kMax), 1);
  EXPECT_EQ(lost[0][1], 150);
}

}  // namespace
}  // namespace mpk
