#include "group_table.h"

#include "meta_arena.h"

namespace mpk {

PageGroup *GroupTable::find(int vkey) const {
  if (!cap_ || vkey < 0) return nullptr;
  for (uint32_t i = hash(vkey) & (cap_ - 1);; i = (i + 1) & (cap_ - 1)) {
    if (slots_[i].key == vkey) return slots_[i].group;
    if (slots_[i].key == kEmpty) return nullptr;
  }
}

bool GroupTable::grow() {
  uint32_t old_cap = cap_;
  Slot *old = slots_;
  uint32_t cap = cap_ ? cap_ * 2 : 64;
  if (size_ * 4 < cap_) cap = cap_;  // mostly tombstones: rehash at the same size
  auto *s = static_cast<Slot *>(arena_->alloc(cap * sizeof(Slot)));
  if (!s) return false;
  for (uint32_t i = 0; i < cap; ++i) s[i] = Slot{kEmpty, nullptr};
  slots_ = s;
  cap_ = cap;
  size_ = used_ = 0;
  for (uint32_t i = 0; i < old_cap; ++i)
    if (old[i].key >= 0) insert(old[i].key, old[i].group);
  if (old) arena_->free(old, old_cap * sizeof(Slot));
  return true;
}

bool GroupTable::insert(int vkey, PageGroup *g) {
  if ((used_ + 1) * 2 > cap_ && !grow()) return false;
  uint32_t i = hash(vkey) & (cap_ - 1);
  while (slots_[i].key >= 0) i = (i + 1) & (cap_ - 1);
  if (slots_[i].key == kEmpty) ++used_;
  slots_[i] = Slot{vkey, g};
  ++size_;
  return true;
}

bool GroupTable::erase(int vkey) {
  if (!cap_) return false;
  for (uint32_t i = hash(vkey) & (cap_ - 1);; i = (i + 1) & (cap_ - 1)) {
    if (slots_[i].key == vkey) {
      slots_[i] = Slot{kTomb, nullptr};
      --size_;
      return true;
    }
    if (slots_[i].key == kEmpty) return false;
  }
}

}  // namespace mpk
