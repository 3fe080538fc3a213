// values.h - the text forms of policy values (sizes, permissions, signals), parsed without TOML.
//
// Each parser returns false for text it does not accept; the loader then says what it expected.
#pragma once

#include <cstdint>

namespace mpk::cfg {

// "4096", "64K", "1m", "2G", "1T": a decimal count of bytes with an optional binary suffix
// (K = 1024, case-insensitive). False on anything else or on overflow.
bool parse_size_text(const char *text, uint64_t *out);

// "none" -> 0, else letters r, w, x, each at most once, in any order -> PROT_* bits.
bool parse_prot_text(const char *text, int *out);

// "SIGRTMIN", "SIGRTMIN+n", "SIGRTMAX", "SIGRTMAX-n" (the "SIG" is optional) -> the signal
// number in this process. False on other text; the result may still be out of the real-time
// range, which the caller checks.
bool parse_signal_text(const char *text, int *out);

// "0x..." (hex) or decimal -> a 64-bit address.
bool parse_address_text(const char *text, uint64_t *out);

}  // namespace mpk::cfg
