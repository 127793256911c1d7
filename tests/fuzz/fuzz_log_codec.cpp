// libFuzzer target: the log batch decoder and the program-definition decoder on hostile bytes.
// Most random inputs fail the checksum, which would leave the record parser unexplored, so every
// input is also tried "sealed": given a valid magic, version, length and hash, then decoded. The
// decoders must never crash, read out of bounds or hit undefined behaviour (ASan + UBSan), and a
// batch that decodes must decode again to the same records.
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "storage/log_codec.h"
#include "storage/program_codec.h"

using namespace tally;
using namespace tally::storage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> raw(data, data + size);
  std::vector<Effect> out;
  BatchHeader h;
  (void)decode_batch(raw, &h, &out);
  (void)decode_programs(std::string_view(reinterpret_cast<const char*>(data), size));

  if (size < kBatchHeaderBytes) return 0;
  std::vector<uint8_t> sealed = raw;
  const uint32_t magic = kBatchMagic;
  const uint16_t version = kLogFormatVersion;
  const uint32_t body = static_cast<uint32_t>(size - kBatchHeaderBytes);
  for (int i = 0; i < 4; ++i) sealed[i] = static_cast<uint8_t>(magic >> (8 * i));
  for (int i = 0; i < 2; ++i) sealed[4 + i] = static_cast<uint8_t>(version >> (8 * i));
  for (int i = 0; i < 4; ++i) sealed[44 + i] = static_cast<uint8_t>(body >> (8 * i));
  uint64_t hash = compute_batch_hash(sealed);
  for (int i = 0; i < 8; ++i) sealed[56 + i] = static_cast<uint8_t>(hash >> (8 * i));
  out.clear();
  if (decode_batch(sealed, &h, &out) == DecodeError::kOk) {
    std::vector<Effect> again;
    BatchHeader h2;
    if (decode_batch(sealed, &h2, &again) != DecodeError::kOk || again.size() != out.size()) __builtin_trap();
    for (size_t i = 0; i < out.size(); ++i)
      if (!equal_logged(out[i], again[i])) __builtin_trap();
  }
  return 0;
}
