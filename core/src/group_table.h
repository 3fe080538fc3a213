// group_table.h - vkey -> PageGroup*, an open-addressing hash table in the metadata arena.
//
// Unlimited vkeys: the table doubles when half full. Not thread-safe (the engine's lock).
#pragma once

#include <cstdint>

namespace mpk {

class MetaArena;
struct PageGroup;

class GroupTable {
 public:
  explicit GroupTable(MetaArena *arena) : arena_(arena) {}
  PageGroup *find(int vkey) const;
  bool insert(int vkey, PageGroup *g);  // false: out of memory (vkey must not be present)
  bool erase(int vkey);
  uint32_t size() const { return size_; }

  template <typename F>
  void for_each(F &&f) const {
    for (uint32_t i = 0; i < cap_; ++i)
      if (slots_[i].key >= 0) f(slots_[i].group);
  }

 private:
  static constexpr int kEmpty = -1, kTomb = -2;
  struct Slot {
    int key;
    PageGroup *group;
  };
  bool grow();
  static uint32_t hash(int k) { return static_cast<uint32_t>(k) * 2654435761u; }
  MetaArena *arena_;
  Slot *slots_ = nullptr;
  uint32_t cap_ = 0, size_ = 0, used_ = 0;  // used_ counts tombstones too
};

}  // namespace mpk
