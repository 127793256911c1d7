// Tally storage: the one LMDB environment of a data directory. The only code that includes lmdb.h.
//
// Databases (docs/log-format.md):
//   log       key: LSN (8 bytes, big-endian, so byte order is numeric order); value: one batch
//             (storage/log_codec.h), appended with MDB_APPEND
//   meta      key: a name; value: format version, shard count, epoch, program definitions, the
//             trim point, the last complete checkpoint and each shard's state at its cut, consumer
//             cursors
//   accounts  checkpointed table slices (accounts and every side table), versioned by round
//   dedup     checkpointed order references (claims) of the trimmed log, appended
//   history   the history index: per member, every logged effect, in sorted segments
//   lookup    the order index: per reference, where its effects are in `history`
//
// Durability: LMDB's defaults (a commit writes the data pages, fdatasyncs, then writes the meta page
// through an O_DSYNC descriptor). The only weaker mode is StoreOptions::unsafe_no_sync, off by
// default; docs/log-format.md says what it loses.
//
// Threads: one writer at a time (the committer, or a tool); readers on any thread. The map grows
// automatically before it is full; growing needs every transaction of this process closed, so
// readers hold a shared lock for the life of their read transaction and growth takes it
// exclusively (DESIGN section 8, "LMDB facts").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace tally::storage {

// Any LMDB or file-system failure, with what was being done and LMDB's message.
class StorageError : public std::runtime_error {
 public:
  StorageError(const std::string& what, int code) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }  // the LMDB or errno code, 0 if none

 private:
  int code_;
};

// The on-disk format version this build writes (meta "format_version"). A data directory with a
// newer version is refused; so is version 1 (its checkpoints hold 56-byte account records, before
// lots: docs/log-format.md "Versions").
constexpr uint32_t kStoreFormatVersion = 2;
constexpr uint32_t kStoreFormatVersionOldest = 2;

struct StoreOptions {
  std::string dir;                          // created if missing
  uint64_t map_size_initial = 1ull << 30;   // bytes; grows by doubling up to map_size_max
  uint64_t map_size_max = 1ull << 42;
  // MDB_NOSYNC: commits are not flushed to disk. A process crash loses nothing; a power loss or
  // kernel crash can lose the latest commits (and, with it, acknowledged events) or, on some file
  // systems, corrupt the environment. For benchmarks and throwaway data only.
  bool unsafe_no_sync = false;
  bool read_only = false;                   // tools: open without writing anything
};

// One batch to append: its LSN and encoded bytes.
struct BatchBytes {
  uint64_t lsn;
  std::span<const uint8_t> bytes;
};

// Where a checkpointed slice lives (docs/checkpoints.md): a table slice of one shard's program, in
// the version of one checkpoint round.
struct SliceKey {
  uint16_t shard = 0;
  uint32_t program = 0;
  uint8_t table = 0;
  uint64_t slice = 0;
  uint32_t round = 0;
  bool same_slice(const SliceKey& o) const {
    return shard == o.shard && program == o.program && table == o.table && slice == o.slice;
  }
};
struct SlicePut {
  SliceKey key;
  std::span<const uint8_t> bytes;  // empty: the slice holds no entry
};

// The history index's two databases (storage/history.h).
enum class IndexDb : uint8_t { kHistory = 0, kLookup = 1 };
struct IndexPut {
  IndexDb db;
  std::span<const uint8_t> key;    // ascending within each database, above every key stored
  std::span<const uint8_t> value;
};

// Everything one write transaction does, in this order: trim the log, append batches, erase then
// write slices, append dedup values, drop then append index keys, erase then write meta.
struct WriteSet {
  std::span<const BatchBytes> log;
  uint64_t trim_through = 0;  // delete log batches with LSN <= this (0: none)
  std::vector<SlicePut> slices;
  // Versions of a written slice older than its newest version at or below this round are
  // superseded and deleted; a slice with no entry and no older version is not written at all.
  uint32_t slices_complete_round = 0;
  std::vector<SliceKey> slice_erase;
  std::vector<std::span<const uint8_t>> dedup;  // values appended to the dedup database
  uint32_t index_drop_from = 0;  // delete index keys of this segment and later (0: none)
  std::vector<IndexPut> index;   // appended (MDB_APPEND)
  std::vector<std::string> meta_erase;
  std::vector<std::pair<std::string, std::string>> meta;
  bool empty() const {
    return log.empty() && trim_through == 0 && slices.empty() && slice_erase.empty() && dedup.empty() &&
           index_drop_from == 0 && index.empty() && meta_erase.empty() && meta.empty();
  }
};

struct StoreStats {
  std::string path;
  uint64_t map_size = 0;
  uint64_t used_bytes = 0;     // pages in use x page size
  uint32_t page_size = 0;
  uint64_t log_batches = 0;
  uint64_t first_lsn = 0;      // 0 when the log is empty
  uint64_t last_lsn = 0;
  uint64_t log_bytes = 0;      // pages of the log database x page size
  uint64_t slice_versions = 0; // checkpointed slices (accounts database entries)
  uint64_t checkpoint_bytes = 0;
  uint64_t dedup_values = 0;
  uint64_t dedup_bytes = 0;
  uint64_t history_entries = 0;
  uint64_t index_bytes = 0;    // history and lookup
  std::string flags;           // the LMDB flags in force, for the benchmark reports
};

class Store {
 public:
  // Opens (creating when missing and not read-only) the environment in options.dir and checks its
  // format version. Throws StorageError naming the directory and the reason.
  explicit Store(StoreOptions options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // ---- writing: one thread at a time --------------------------------------------------------
  // Appends batches (ascending LSNs, each above the last one stored) and meta updates in one
  // transaction, and commits it durably. On any failure throws StorageError; the transaction is
  // aborted, never retried, and the caller must treat the store as failed.
  void commit(std::span<const BatchBytes> batches,
              std::span<const std::pair<std::string, std::string>> meta = {});
  // The general form of commit(): one durable transaction doing everything in `w`.
  void write(const WriteSet& w);
  // Repair only: deletes every batch with LSN >= `from`. Returns how many.
  uint64_t truncate_from(uint64_t from);

  // ---- reading: any thread -------------------------------------------------------------------
  std::optional<std::string> meta(const std::string& key) const;
  // Every meta entry whose key starts with `prefix`, in key order.
  std::vector<std::pair<std::string, std::string>> meta_with_prefix(const std::string& prefix) const;
  uint64_t first_lsn() const;  // 0 when empty
  uint64_t last_lsn() const;   // 0 when empty
  // Calls f(lsn, bytes) for each batch with LSN >= from, in order, inside one read transaction,
  // until f returns false. The bytes are valid only during the call.
  void scan(uint64_t from, const std::function<bool(uint64_t, std::span<const uint8_t>)>& f) const;
  // Reads one batch; empty when absent.
  std::vector<uint8_t> batch(uint64_t lsn) const;
  // Every checkpointed slice version, in key order (by shard, program, table, slice, round). The
  // stored checksum of each is verified first: a mismatch throws StorageError naming the slice.
  void scan_slices(const std::function<void(const SliceKey&, std::span<const uint8_t>)>& f) const;
  // Every dedup value, in the order appended, checksums verified.
  void scan_dedup(const std::function<void(std::span<const uint8_t>)>& f) const;
  // Index entries in key order from the last one whose key is <= `from` (the first one when none
  // is; from the first when `from` is empty), until f returns false: for blocked databases, where
  // the entry holding `from` is keyed by a smaller key (storage/history.cpp).
  void index_scan_from(IndexDb db, std::span<const uint8_t> from,
                       const std::function<bool(std::span<const uint8_t>, std::span<const uint8_t>)>& f) const;

  StoreStats stats() const;
  // A consistent copy of the whole environment into the empty or missing directory `to`, while
  // writers continue (LMDB's copy with compaction). The copy's file is fsynced.
  void backup(const std::string& to) const;
  const StoreOptions& options() const { return options_; }

 private:
  struct Env;
  void grow_if_needed(uint64_t incoming_bytes);

  StoreOptions options_;
  std::unique_ptr<Env> env_;
  mutable std::shared_mutex resize_mutex_;  // shared: any open transaction; exclusive: set_mapsize
};

// Big-endian 8-byte key for an LSN.
void lsn_key(uint64_t lsn, unsigned char out[8]);

}  // namespace tally::storage
