// trace_diff.h - two outcome traces of the same program, side by side.
#pragma once

#include <string>

namespace mpkdiff {

// Lines are matched by position (both runs execute the same ops). Each row shows the op once and
// the two outcomes next to it, '*' marking rows that differ. Rows well before the first
// difference are summarised; at most `max_rows` rows are shown after it.
std::string side_by_side(const std::string &left, const std::string &right, const std::string &left_name,
                         const std::string &right_name, size_t max_rows = 60);

// The first differing line in one row: "<op> | <left outcome> | <right outcome>"; empty when
// the traces are equal.
std::string first_difference(const std::string &left, const std::string &right);

}  // namespace mpkdiff
