#include "storage/raw_append.h"

#include <lmdb.h>
#include <sys/vfs.h>

#include <chrono>
#include <filesystem>

#include "storage/store.h"

namespace tally::storage {
namespace {
void check(int rc, const char* what) {
  if (rc != MDB_SUCCESS) throw StorageError(std::string("raw LMDB loop: ") + what + ": " + mdb_strerror(rc), rc);
}
}  // namespace

RawAppendResult raw_append_loop(const std::string& dir, const std::vector<std::vector<std::vector<uint8_t>>>& per_commit,
                                uint64_t commits, bool no_sync) {
  std::filesystem::create_directories(dir);
  MDB_env* env = nullptr;
  check(mdb_env_create(&env), "create");
  RawAppendResult r;
  try {
    check(mdb_env_set_maxdbs(env, 2), "maxdbs");
    check(mdb_env_set_mapsize(env, uint64_t{64} << 30), "mapsize");
    check(mdb_env_open(env, dir.c_str(), MDB_NOTLS | (no_sync ? MDB_NOSYNC : 0), 0640), "open");
    MDB_dbi dbi;
    {
      MDB_txn* txn;
      check(mdb_txn_begin(env, nullptr, 0, &txn), "begin");
      check(mdb_dbi_open(txn, "log", MDB_CREATE, &dbi), "dbi");
      check(mdb_txn_commit(txn), "commit");
    }
    uint64_t key = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (uint64_t c = 0; c < commits; ++c) {
      const auto& values = per_commit[c % per_commit.size()];
      auto c0 = std::chrono::steady_clock::now();
      MDB_txn* txn;
      check(mdb_txn_begin(env, nullptr, 0, &txn), "begin");
      for (const auto& v : values) {
        unsigned char k[8];
        lsn_key(++key, k);
        MDB_val kv{8, k}, vv{v.size(), const_cast<uint8_t*>(v.data())};
        int rc = mdb_put(txn, dbi, &kv, &vv, MDB_APPEND);
        if (rc != MDB_SUCCESS) {
          mdb_txn_abort(txn);
          check(rc, "put");
        }
        r.bytes += v.size();
        ++r.values;
      }
      check(mdb_txn_commit(txn), "commit");
      r.commit_ns.record(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - c0).count()));
      ++r.commits;
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } catch (...) {
    mdb_env_close(env);
    throw;
  }
  mdb_env_close(env);
  return r;
}

std::string file_system_of(const std::string& path) {
  struct statfs s;
  if (statfs(path.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs (no real fsync!)";
    case 0x794c7630: return "overlayfs";
    case 0x2FC12FC1: return "zfs";
    default: return "other (0x" + std::to_string(static_cast<unsigned long>(s.f_type)) + ")";
  }
}

}  // namespace tally::storage
