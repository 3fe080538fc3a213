// glob.cc - glob_match() as a set-of-states automaton over pattern offsets.
//
// Each state is a byte offset into the pattern (the token that comes next); a bitset holds every
// state the text read so far can be in. This needs no recursion and no allocation, and a bad
// pattern cannot make it exponential, which matters because it runs on interposed mmap paths.
#include <cstdint>
#include <cstring>

#include "policy.h"

namespace mpk::cfg {
namespace {

constexpr size_t kWords = (kGlobMaxPattern + 1 + 63) / 64;

struct StateSet {
  uint64_t w[kWords];
  void clear() { for (auto &x : w) x = 0; }
  void set(size_t i) { w[i / 64] |= uint64_t{1} << (i % 64); }
  bool has(size_t i) const { return (w[i / 64] >> (i % 64)) & 1; }
  bool empty() const {
    for (auto x : w) if (x) return false;
    return true;
  }
};

enum class Tok { kEnd, kLiteral, kAny, kStar, kDoubleStar, kClass };

struct Token {
  Tok kind;
  char literal;     // kLiteral
  size_t class_at;  // kClass: offset of the first byte after '['
  size_t next;      // offset of the following token
};

// Offset just past the ']' closing a class that opens at `at` (the byte after '['), or 0 when
// the class is not closed (then '[' is an ordinary character).
size_t class_end(const char *p, size_t len, size_t at) {
  size_t i = at;
  if (i < len && (p[i] == '!' || p[i] == '^')) ++i;
  if (i < len && p[i] == ']') ++i;  // a ']' first in the class is literal
  for (; i < len; ++i) {
    if (p[i] == '\\' && i + 1 < len) { ++i; continue; }
    if (p[i] == ']') return i + 1;
  }
  return 0;
}

Token token_at(const char *p, size_t len, size_t i) {
  if (i >= len) return {Tok::kEnd, 0, 0, len};
  char c = p[i];
  if (c == '*') {
    if (i + 1 < len && p[i + 1] == '*') {
      size_t j = i + 2;
      while (j < len && p[j] == '*') ++j;  // "***" is "**"
      return {Tok::kDoubleStar, 0, 0, j};
    }
    return {Tok::kStar, 0, 0, i + 1};
  }
  if (c == '?') return {Tok::kAny, 0, 0, i + 1};
  if (c == '[') {
    size_t end = class_end(p, len, i + 1);
    if (end) return {Tok::kClass, 0, i + 1, end};
    return {Tok::kLiteral, '[', 0, i + 1};
  }
  if (c == '\\' && i + 1 < len) return {Tok::kLiteral, p[i + 1], 0, i + 2};
  return {Tok::kLiteral, c, 0, i + 1};
}

bool class_holds(const char *p, size_t at, size_t end, unsigned char c) {
  size_t i = at;
  bool negate = false;
  if (p[i] == '!' || p[i] == '^') { negate = true; ++i; }
  size_t last = end - 1;  // the closing ']'
  bool hit = false;
  // class_end() found the closing ']', so every byte before `last` belongs to the class.
  while (i < last) {
    unsigned char lo = static_cast<unsigned char>(p[i]);
    if (lo == '\\' && i + 1 < last) lo = static_cast<unsigned char>(p[++i]);
    ++i;
    unsigned char hi = lo;
    if (i + 1 < last && p[i] == '-') {
      hi = static_cast<unsigned char>(p[i + 1]);
      if (hi == '\\' && i + 2 < last) { hi = static_cast<unsigned char>(p[i + 2]); ++i; }
      i += 2;
    }
    if (c >= lo && c <= hi) hit = true;
  }
  return hit != negate;
}

// Adds the states reachable without reading a character. Every such edge goes forward, so one
// pass in offset order reaches the fixed point.
void close_over(const char *p, size_t len, bool slash_special, StateSet *s) {
  for (size_t i = 0; i <= len; ++i) {
    if (!s->has(i)) continue;
    Token t = token_at(p, len, i);
    if (t.kind == Tok::kStar || t.kind == Tok::kDoubleStar) s->set(t.next);
    // "/**/x" also matches "/x", and a leading "**/x" also matches "x": the "**/" may be empty.
    if (t.kind == Tok::kDoubleStar && slash_special && t.next < len && p[t.next] == '/' &&
        (i == 0 || p[i - 1] == '/'))
      s->set(t.next + 1);
  }
}

}  // namespace

bool glob_match(const char *pattern, const char *s, bool slash_special) {
  if (!pattern || !s) return false;
  size_t len = strlen(pattern);
  if (len > kGlobMaxPattern) return false;

  StateSet cur, next;
  cur.clear();
  cur.set(0);
  close_over(pattern, len, slash_special, &cur);
  for (const char *q = s; *q; ++q) {
    unsigned char c = static_cast<unsigned char>(*q);
    bool is_slash = slash_special && c == '/';
    next.clear();
    for (size_t i = 0; i < len; ++i) {
      if (!cur.has(i)) continue;
      Token t = token_at(pattern, len, i);
      switch (t.kind) {
        case Tok::kEnd: break;
        case Tok::kLiteral: if (static_cast<unsigned char>(t.literal) == c) next.set(t.next); break;
        case Tok::kAny: if (!is_slash) next.set(t.next); break;
        case Tok::kStar: if (!is_slash) next.set(i); break;
        case Tok::kDoubleStar: next.set(i); break;
        case Tok::kClass:
          if (!is_slash && class_holds(pattern, t.class_at, t.next, c)) next.set(t.next);
          break;
      }
    }
    close_over(pattern, len, slash_special, &next);
    if (next.empty()) return false;
    cur = next;
  }
  return cur.has(len);
}

}  // namespace mpk::cfg
