// Tally storage: the byte format of one log batch (docs/log-format.md is the contract).
//
// A batch is one LMDB value in the `log` database, keyed by its log sequence number (LSN). It holds
// a 64-byte header and a body of variable-length effect records, little-endian throughout. The
// header carries an XXH3-64 hash over the header (hash field excluded) and the body, and the hash
// of the previous batch, so a flipped bit, a torn page, a reordered or a removed batch is detected
// on read. Decoding is bounds-checked everywhere: a corrupt value yields an error, never a crash
// or an out-of-range read (the decoder is fuzzed).
//
// Pure code: no LMDB, no threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/types.h"

namespace tally::storage {

constexpr uint32_t kBatchMagic = 0x424c4154;  // the bytes "TALB"
constexpr uint16_t kLogFormatVersion = 1;
constexpr size_t kBatchHeaderBytes = 64;
// Batches are cut at about this many body bytes: LMDB stores larger values on overflow pages,
// which fragment its free list when the log is trimmed (DESIGN section 8).
constexpr size_t kBatchBodyTarget = 3800;
// Hard limit a decoder accepts for one batch body.
constexpr size_t kBatchBodyMax = 1 << 20;

struct BatchHeader {
  uint16_t version = kLogFormatVersion;
  uint16_t flags = 0;
  uint64_t lsn = 0;
  uint64_t epoch = 0;
  uint64_t prev_hash = 0;   // `hash` of the batch with LSN lsn - 1 (the chain)
  int64_t base_time_ms = 0; // record times are stored relative to this
  uint32_t record_count = 0;
  uint32_t body_bytes = 0;
  uint64_t hash = 0;        // XXH3-64(body, seed = XXH3-64(header bytes [0, 56)))
};

enum class DecodeError : uint8_t {
  kOk = 0,
  kTooShort,        // fewer bytes than the header, or than the header says
  kBadMagic,
  kNewerVersion,    // written by a newer Tally: refuse, do not guess
  kBadVersion,      // a version this build never wrote
  kBadChecksum,     // the hash does not match the bytes
  kBadRecord,       // a record runs past the body or holds an impossible value
  kTrailingBytes,   // bytes left after the last record
};
std::string_view to_string(DecodeError e);

// Encodes effects into one batch. Reads (kBalance) are never logged: the committer skips them.
class BatchWriter {
 public:
  void begin(uint64_t lsn, uint64_t epoch, uint64_t prev_hash, int64_t base_time_ms);
  void add(const Effect& e);
  // Body bytes so far.
  size_t body_size() const { return bytes_.size() - kBatchHeaderBytes; }
  uint32_t records() const { return count_; }
  // Fills in the header and the hash; the bytes stay valid until the next begin().
  std::span<const uint8_t> finish(BatchHeader* header);

 private:
  std::vector<uint8_t> bytes_;
  BatchHeader header_;
  uint32_t count_ = 0;
};

// The hash a batch's header must carry: XXH3-64(body, seed = XXH3-64(header bytes [0, 56))).
// `value` is the whole batch (header and body).
uint64_t compute_batch_hash(std::span<const uint8_t> value);

// Checks magic, version, lengths and the hash. On kOk, *header is filled in.
DecodeError read_header(std::span<const uint8_t> value, BatchHeader* header);

// read_header(), then decodes every record, appending to *out (each with event, times, seq,
// points, state, flags, dependency). On error *out may hold a prefix of the records.
DecodeError decode_batch(std::span<const uint8_t> value, BatchHeader* header, std::vector<Effect>* out);

// ---- The change stream (docs/protocol.md, "Log batches") ---------------------------------------
// A batch as a subscriber limited to one program receives it: the same header (LSN, epoch, the
// previous batch's hash, and this batch's own hash at offset 56, so the chain can still be
// followed), flags with kBatchFiltered set, the kept records' count and body length, the original
// record count in bytes 48..51, and only the records of that program. Its body is not covered by
// the hash (the frame's checksum covers it on the wire).
constexpr uint16_t kBatchFiltered = 1;
// Appends to *out the batch `value` (already verified) filtered to `program`'s records. False if
// `value` does not decode.
bool filter_batch(std::span<const uint8_t> value, uint32_t program, std::vector<uint8_t>* out);
// A batch received from the stream: a whole batch is checked as read_header() checks it; a
// filtered one has its magic, version and lengths checked (its hash is the original's, for the
// chain). Then every record is decoded as decode_batch() does.
DecodeError decode_stream_batch(std::span<const uint8_t> value, BatchHeader* header, std::vector<Effect>* out);

// True when `a` and `b` agree on every field the log stores (reserved bytes are not stored).
bool equal_logged(const Effect& a, const Effect& b);

// The size of one record as this version encodes it: for the bytes-per-effect figures.
size_t encoded_size(const Effect& e, int64_t base_time_ms);

}  // namespace tally::storage
