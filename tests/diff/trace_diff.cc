// trace_diff.cc - the side-by-side view of a mismatch.
#include "trace_diff.h"

#include <algorithm>
#include <cstdio>
#include <string_view>
#include <vector>

namespace mpkdiff {
namespace {

std::vector<std::string_view> lines_of(const std::string &s) {
  std::vector<std::string_view> lines;
  size_t at = 0;
  while (at < s.size()) {
    size_t nl = s.find('\n', at);
    if (nl == std::string::npos) nl = s.size();
    lines.push_back(std::string_view(s).substr(at, nl - at));
    at = nl + 1;
  }
  return lines;
}

// "op text -> outcome" split at the arrow; lines without one are all op text.
std::pair<std::string_view, std::string_view> split(std::string_view line) {
  size_t arrow = line.rfind(" -> ");
  if (arrow == std::string_view::npos) return {line, {}};
  return {line.substr(0, arrow), line.substr(arrow + 4)};
}

std::string fit(std::string_view s, size_t width) {
  std::string out(s.substr(0, width));
  if (s.size() > width) out.back() = '~';
  out.resize(width, ' ');
  return out;
}

}  // namespace

std::string side_by_side(const std::string &left, const std::string &right, const std::string &left_name,
                         const std::string &right_name, size_t max_rows) {
  std::vector<std::string_view> a = lines_of(left), b = lines_of(right);
  size_t rows = std::max(a.size(), b.size());
  size_t first = 0;
  while (first < rows && first < a.size() && first < b.size() && a[first] == b[first]) ++first;

  constexpr size_t kOpWidth = 54, kOutWidth = 38;
  std::string out;
  out += "    " + fit("op", kOpWidth) + " | " + fit(left_name, kOutWidth) + " | " + right_name + "\n";
  size_t begin = first > 6 ? first - 6 : 0;
  if (begin > 0) out += "    (" + std::to_string(begin) + " identical lines before)\n";
  size_t end = std::min(rows, first + max_rows);
  for (size_t i = begin; i < end; ++i) {
    std::string_view la = i < a.size() ? a[i] : "(missing)";
    std::string_view lb = i < b.size() ? b[i] : "(missing)";
    auto [op_a, out_a] = split(la);
    auto [op_b, out_b] = split(lb);
    char mark = la == lb ? ' ' : '*';
    if (op_a == op_b) {
      out += std::string("  ") + mark + " " + fit(op_a, kOpWidth) + " | " + fit(out_a, kOutWidth) + " | " +
             std::string(out_b) + "\n";
    } else {  // not the same op: show the whole lines
      out += std::string("  ") + mark + " " + std::string(la) + "\n";
      out += std::string("  ") + mark + " " + std::string(lb) + "   (" + right_name + ")\n";
    }
  }
  if (end < rows) out += "    (" + std::to_string(rows - end) + " more lines)\n";
  return out;
}

std::string first_difference(const std::string &left, const std::string &right) {
  std::vector<std::string_view> a = lines_of(left), b = lines_of(right);
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    std::string_view la = i < a.size() ? a[i] : "(missing)";
    std::string_view lb = i < b.size() ? b[i] : "(missing)";
    if (la == lb) continue;
    auto [op_a, out_a] = split(la);
    auto [op_b, out_b] = split(lb);
    if (op_a == op_b) return std::string(op_a) + " | " + std::string(out_a) + " | " + std::string(out_b);
    return std::string(la) + " | " + std::string(lb);
  }
  return {};
}

}  // namespace mpkdiff
