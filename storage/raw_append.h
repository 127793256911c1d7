// Tally storage: the benchmarks' ceiling — a bare LMDB loop, nothing of Tally in it.
//
// Appends pre-encoded values to a fresh environment with the same flags the log uses: for each
// commit, begin a write transaction, MDB_APPEND each value under the next big-endian key, commit
// (fdatasync + meta page). It lives here because only storage/ may include lmdb.h.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/histogram.h"

namespace tally::storage {

struct RawAppendResult {
  uint64_t commits = 0;
  uint64_t values = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  LogHistogram commit_ns;  // begin to commit returned
};

// `per_commit[i]` are the values of commit i (cycled until `commits` commits are done).
// Throws StorageError on any LMDB failure. `no_sync` opens with MDB_NOSYNC (for comparisons only).
RawAppendResult raw_append_loop(const std::string& dir, const std::vector<std::vector<std::vector<uint8_t>>>& per_commit,
                                uint64_t commits, bool no_sync = false);

// The file system type under `path` (ext4, xfs, tmpfs, ...), for benchmark reports.
std::string file_system_of(const std::string& path);

}  // namespace tally::storage
