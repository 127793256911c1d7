#include "storage/store.h"

#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <xxhash.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace tally::storage {
namespace {

[[noreturn]] void fail(const std::string& what, int rc) {
  throw StorageError(what + ": " + mdb_strerror(rc), rc);
}
void check(int rc, const std::string& what) {
  if (rc != MDB_SUCCESS) fail(what, rc);
}

MDB_val val(const void* p, size_t n) { return MDB_val{n, const_cast<void*>(p)}; }
std::span<const uint8_t> bytes_of(const MDB_val& v) {
  return {static_cast<const uint8_t*>(v.mv_data), v.mv_size};
}
uint64_t lsn_of(const MDB_val& k) {
  if (k.mv_size != 8) return 0;
  uint64_t v = 0;
  auto* p = static_cast<const unsigned char*>(k.mv_data);
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

// A transaction that aborts unless committed.
class Txn {
 public:
  Txn(MDB_env* env, unsigned flags) { check(mdb_txn_begin(env, nullptr, flags, &txn_), "begin transaction"); }
  ~Txn() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
  }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  MDB_txn* get() const { return txn_; }
  void commit() {
    MDB_txn* t = txn_;
    txn_ = nullptr;  // committed or failed, the handle is gone either way: never retried
    check(mdb_txn_commit(t), "commit");
  }

 private:
  MDB_txn* txn_ = nullptr;
};

class Cursor {
 public:
  Cursor(MDB_txn* txn, MDB_dbi dbi) { check(mdb_cursor_open(txn, dbi, &c_), "open cursor"); }
  ~Cursor() { mdb_cursor_close(c_); }
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  // False at the end (MDB_NOTFOUND).
  bool get(MDB_val* k, MDB_val* v, MDB_cursor_op op) {
    int rc = mdb_cursor_get(c_, k, v, op);
    if (rc == MDB_NOTFOUND) return false;
    check(rc, "read cursor");
    return true;
  }
  MDB_cursor* raw() { return c_; }

 private:
  MDB_cursor* c_ = nullptr;
};

// Slice keys: shard, program, table, slice, round; big-endian, so key order is that order.
constexpr size_t kSliceKeyBytes = 19;
void put_be(unsigned char* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<unsigned char>(v);
    v >>= 8;
  }
}
uint64_t get_be(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}
void slice_key(const SliceKey& s, unsigned char out[kSliceKeyBytes]) {
  put_be(out, s.shard, 2);
  put_be(out + 2, s.program, 4);
  out[6] = s.table;
  put_be(out + 7, s.slice, 8);
  put_be(out + 15, s.round, 4);
}
SliceKey parse_slice_key(const MDB_val& k) {
  SliceKey s;
  if (k.mv_size != kSliceKeyBytes) throw StorageError("checkpoint: a key of the wrong size", 0);
  auto* p = static_cast<const unsigned char*>(k.mv_data);
  s.shard = static_cast<uint16_t>(get_be(p, 2));
  s.program = static_cast<uint32_t>(get_be(p + 2, 4));
  s.table = p[6];
  s.slice = get_be(p + 7, 8);
  s.round = static_cast<uint32_t>(get_be(p + 15, 4));
  return s;
}
// Checksummed values (slices, dedup): XXH3-64 of the bytes seeded with XXH3-64 of the key, then
// the bytes.
uint64_t value_hash(const void* key, size_t key_len, std::span<const uint8_t> bytes) {
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), XXH3_64bits(key, key_len));
}
// Reserves room for a checksummed value and fills it in place. `what()` names the value in an
// error (built only then: these run once per slice and per dedup value).
template <class What>
void put_checked(MDB_txn* txn, MDB_dbi dbi, MDB_val* k, std::span<const uint8_t> bytes, unsigned flags,
                 const What& what) {
  MDB_val v{8 + bytes.size(), nullptr};
  int rc = mdb_put(txn, dbi, k, &v, flags | MDB_RESERVE);
  if (rc != MDB_SUCCESS) fail(what(), rc);
  uint64_t h = value_hash(k->mv_data, k->mv_size, bytes);
  std::memcpy(v.mv_data, &h, 8);
  if (!bytes.empty()) std::memcpy(static_cast<char*>(v.mv_data) + 8, bytes.data(), bytes.size());
}
template <class What>
std::span<const uint8_t> checked_bytes(const MDB_val& k, const MDB_val& v, const What& what) {
  if (v.mv_size < 8) throw StorageError(what() + ": value too short (corrupt)", 0);
  std::span<const uint8_t> b(static_cast<const uint8_t*>(v.mv_data) + 8, v.mv_size - 8);
  uint64_t h;
  std::memcpy(&h, v.mv_data, 8);
  if (h != value_hash(k.mv_data, k.mv_size, b)) throw StorageError(what() + ": checksum mismatch (corrupt)", 0);
  return b;
}
std::string describe(const SliceKey& s) {
  return "checkpoint slice (shard " + std::to_string(s.shard) + ", program " + std::to_string(s.program) +
         ", table " + std::to_string(s.table) + ", slice " + std::to_string(s.slice) + ", round " +
         std::to_string(s.round) + ")";
}

}  // namespace

void lsn_key(uint64_t lsn, unsigned char out[8]) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<unsigned char>(lsn);
    lsn >>= 8;
  }
}

struct Store::Env {
  MDB_env* env = nullptr;
  MDB_dbi log = 0, meta = 0, accounts = 0, dedup = 0, history = 0, lookup = 0;
  bool has_lookup = true;
  MDB_dbi index(IndexDb db) const { return db == IndexDb::kHistory ? history : lookup; }
  unsigned flags = 0;
  ~Env() {
    if (env != nullptr) mdb_env_close(env);
  }
};

Store::Store(StoreOptions options) : options_(std::move(options)), env_(std::make_unique<Env>()) {
  const std::string& dir = options_.dir;
  std::error_code ec;
  if (options_.read_only) {
    if (!std::filesystem::exists(std::filesystem::path(dir) / "data.mdb", ec))
      throw StorageError("no Tally data in " + dir + " (data.mdb missing)", ENOENT);
  } else {
    std::filesystem::create_directories(dir, ec);
    if (ec) throw StorageError("cannot create data directory " + dir + ": " + ec.message(), ec.value());
  }
  check(mdb_env_create(&env_->env), "create LMDB environment");
  check(mdb_env_set_maxdbs(env_->env, 8), "set maxdbs");
  // Never shrink an existing file's map: LMDB adopts the larger of this and the file's size.
  check(mdb_env_set_mapsize(env_->env, options_.map_size_initial), "set map size");
  // MDB_NOTLS: read transactions are not tied to threads (readers may hop threads).
  unsigned flags = MDB_NOTLS;
  if (options_.unsafe_no_sync) flags |= MDB_NOSYNC;
  if (options_.read_only) flags |= MDB_RDONLY;
  env_->flags = flags;
  int rc = mdb_env_open(env_->env, dir.c_str(), flags, 0640);
  if (rc != MDB_SUCCESS) fail("open LMDB environment in " + dir, rc);

  {
    Txn txn(env_->env, options_.read_only ? MDB_RDONLY : 0);
    unsigned create = options_.read_only ? 0 : MDB_CREATE;
    auto open_db = [&](const char* name, MDB_dbi* dbi) {
      int r = mdb_dbi_open(txn.get(), name, create, dbi);
      if (r == MDB_NOTFOUND && options_.read_only && std::strcmp(name, "lookup") == 0) {
        env_->has_lookup = false;  // written before the index existed: read as empty
        return;
      }
      if (r != MDB_SUCCESS) fail(std::string("open database '") + name + "' in " + dir, r);
    };
    open_db("log", &env_->log);
    open_db("meta", &env_->meta);
    open_db("accounts", &env_->accounts);
    open_db("dedup", &env_->dedup);
    open_db("history", &env_->history);
    open_db("lookup", &env_->lookup);

    // The format version: written once at creation, checked at every open.
    static const char kKey[] = "format_version";
    MDB_val k = val(kKey, sizeof(kKey) - 1), v;
    rc = mdb_get(txn.get(), env_->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
      if (options_.read_only) throw StorageError(dir + " holds no Tally format version (not a Tally data directory?)", 0);
      std::string version = std::to_string(kStoreFormatVersion);
      MDB_val nv = val(version.data(), version.size());
      check(mdb_put(txn.get(), env_->meta, &k, &nv, 0), "write format version");
    } else {
      check(rc, "read format version");
      std::string stored(static_cast<const char*>(v.mv_data), v.mv_size);
      unsigned long found = std::strtoul(stored.c_str(), nullptr, 10);
      if (found > kStoreFormatVersion)
        throw StorageError(dir + " was written by a newer Tally (data format version " + stored +
                               "; this build reads version " + std::to_string(kStoreFormatVersion) +
                               " and older). Upgrade Tally, or restore a backup made by this version.",
                           0);
      if (found == 0) throw StorageError(dir + ": unreadable format version '" + stored + "'", 0);
      if (found < kStoreFormatVersionOldest)
        throw StorageError(dir + " was written by an older Tally (data format version " + stored +
                               "); this build reads versions " + std::to_string(kStoreFormatVersionOldest) + " to " +
                               std::to_string(kStoreFormatVersion) +
                               ": its checkpoints predate point lots. Run it with the Tally that wrote it, or "
                               "start a new data directory.",
                           0);
    }
    // Commit even a read-only transaction: database handles opened in a transaction that aborts
    // are closed with it.
    if (txn.get() != nullptr) txn.commit();
  }
}

Store::~Store() = default;

void Store::grow_if_needed(uint64_t incoming_bytes) {
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(env_->env, &info);
  mdb_env_stat(env_->env, &st);
  uint64_t used = (static_cast<uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
  // Headroom for this transaction (values, B-tree pages, copy-on-write of the path) twice over.
  uint64_t need = used + 2 * incoming_bytes + (8u << 20);
  uint64_t size = info.me_mapsize;
  if (need <= size - size / 4) return;  // grow at 75% full
  uint64_t grown = size;
  while (need > grown - grown / 4 && grown < options_.map_size_max) grown *= 2;
  if (grown > options_.map_size_max) grown = options_.map_size_max;
  if (grown <= size) return;  // at the limit: the commit will fail with MDB_MAP_FULL, loudly
  std::unique_lock lock(resize_mutex_);  // no transaction of this process is open
  check(mdb_env_set_mapsize(env_->env, grown), "grow map to " + std::to_string(grown) + " bytes");
}

void Store::commit(std::span<const BatchBytes> batches,
                   std::span<const std::pair<std::string, std::string>> meta) {
  WriteSet w;
  w.log = batches;
  w.meta.assign(meta.begin(), meta.end());
  write(w);
}

void Store::write(const WriteSet& w) {
  uint64_t incoming = 0;
  for (const BatchBytes& b : w.log) incoming += b.bytes.size() + 64;
  for (const SlicePut& s : w.slices) incoming += s.bytes.size() + 64;
  for (const auto& d : w.dedup) incoming += d.size() + 64;
  for (const auto& [key, value] : w.meta) incoming += key.size() + value.size() + 64;
  grow_if_needed(incoming);
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, 0);
  if (w.trim_through != 0) {
    Cursor c(txn.get(), env_->log);
    MDB_val k, v;
    for (bool more = c.get(&k, &v, MDB_FIRST); more && lsn_of(k) <= w.trim_through;
         more = c.get(&k, &v, MDB_FIRST)) {  // seek again after a delete, as truncate_from does
      check(mdb_cursor_del(c.raw(), 0), "trim log batch " + std::to_string(lsn_of(k)));
    }
  }
  for (const BatchBytes& b : w.log) {
    unsigned char key[8];
    lsn_key(b.lsn, key);
    MDB_val k = val(key, 8), v = val(b.bytes.data(), b.bytes.size());
    int rc = mdb_put(txn.get(), env_->log, &k, &v, MDB_APPEND);
    if (rc != MDB_SUCCESS) fail("append log batch " + std::to_string(b.lsn), rc);
  }
  for (const SliceKey& s : w.slice_erase) {
    unsigned char key[kSliceKeyBytes];
    slice_key(s, key);
    MDB_val k = val(key, kSliceKeyBytes);
    int rc = mdb_del(txn.get(), env_->accounts, &k, nullptr);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) fail("delete " + describe(s), rc);
  }
  if (!w.slices.empty()) {
    Cursor c(txn.get(), env_->accounts);
    std::vector<uint32_t> versions;
    for (const SlicePut& s : w.slices) {
      // The versions stored for this slice: keep the newest at or below the complete round
      // (recovery needs it until this round completes), delete the older ones.
      SliceKey first = s.key;
      first.round = 0;
      unsigned char key[kSliceKeyBytes];
      slice_key(first, key);
      MDB_val k = val(key, kSliceKeyBytes), v;
      versions.clear();
      for (bool more = c.get(&k, &v, MDB_SET_RANGE); more; more = c.get(&k, &v, MDB_NEXT)) {
        SliceKey found = parse_slice_key(k);
        if (!found.same_slice(s.key)) break;
        versions.push_back(found.round);
      }
      uint32_t keep = 0;
      for (uint32_t r : versions)
        if (r <= w.slices_complete_round && r != s.key.round) keep = std::max(keep, r);
      for (uint32_t r : versions) {
        if (r >= keep || r == s.key.round) continue;
        SliceKey old = s.key;
        old.round = r;
        slice_key(old, key);
        k = val(key, kSliceKeyBytes);
        if (int rc = mdb_del(txn.get(), env_->accounts, &k, nullptr); rc != MDB_SUCCESS)
          fail("delete " + describe(old), rc);
      }
      bool stored_before = std::any_of(versions.begin(), versions.end(), [&](uint32_t r) { return r != s.key.round; });
      if (s.bytes.empty() && !stored_before) {
        // Nothing to say: a slice never stored reads as empty. Drop a stale write of this round.
        if (!versions.empty()) {
          slice_key(s.key, key);
          k = val(key, kSliceKeyBytes);
          if (int rc = mdb_del(txn.get(), env_->accounts, &k, nullptr); rc != MDB_SUCCESS)
            fail("delete " + describe(s.key), rc);
        }
        continue;
      }
      slice_key(s.key, key);
      k = val(key, kSliceKeyBytes);
      put_checked(txn.get(), env_->accounts, &k, s.bytes, 0, [&] { return "write " + describe(s.key); });
    }
  }
  if (!w.dedup.empty()) {
    uint64_t next = 1;
    {
      Cursor c(txn.get(), env_->dedup);
      MDB_val k, v;
      if (c.get(&k, &v, MDB_LAST)) next = lsn_of(k) + 1;
    }
    for (const auto& d : w.dedup) {
      unsigned char key[8];
      lsn_key(next++, key);
      MDB_val k = val(key, 8);
      put_checked(txn.get(), env_->dedup, &k, d, MDB_APPEND, [] { return std::string("append dedup value"); });
    }
  }
  if (w.index_drop_from != 0) {
    unsigned char from[4];
    put_be(from, w.index_drop_from, 4);
    for (MDB_dbi dbi : {env_->history, env_->lookup}) {
      Cursor c(txn.get(), dbi);
      MDB_val k = val(from, 4), v;
      for (bool more = c.get(&k, &v, MDB_SET_RANGE); more; more = c.get(&k, &v, MDB_SET_RANGE)) {
        check(mdb_cursor_del(c.raw(), 0), "drop an unpublished index segment");
        k = val(from, 4);
      }
    }
  }
  for (const IndexPut& p : w.index) {
    MDB_val k = val(p.key.data(), p.key.size()), v = val(p.value.data(), p.value.size());
    int rc = mdb_put(txn.get(), env_->index(p.db), &k, &v, MDB_APPEND);
    if (rc != MDB_SUCCESS) fail("append history index entry", rc);
  }
  for (const std::string& key : w.meta_erase) {
    MDB_val k = val(key.data(), key.size());
    int rc = mdb_del(txn.get(), env_->meta, &k, nullptr);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) fail("erase meta '" + key + "'", rc);
  }
  for (const auto& [key, value] : w.meta) {
    MDB_val k = val(key.data(), key.size()), v = val(value.data(), value.size());
    int rc = mdb_put(txn.get(), env_->meta, &k, &v, 0);
    if (rc != MDB_SUCCESS) fail("write meta '" + key + "'", rc);
  }
  txn.commit();
}

void Store::scan_slices(const std::function<void(const SliceKey&, std::span<const uint8_t>)>& f) const {
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, MDB_RDONLY);
  Cursor c(txn.get(), env_->accounts);
  MDB_val k, v;
  for (bool more = c.get(&k, &v, MDB_FIRST); more; more = c.get(&k, &v, MDB_NEXT)) {
    SliceKey s = parse_slice_key(k);
    f(s, checked_bytes(k, v, [&] { return describe(s); }));
  }
}

void Store::scan_dedup(const std::function<void(std::span<const uint8_t>)>& f) const {
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, MDB_RDONLY);
  Cursor c(txn.get(), env_->dedup);
  MDB_val k, v;
  for (bool more = c.get(&k, &v, MDB_FIRST); more; more = c.get(&k, &v, MDB_NEXT))
    f(checked_bytes(k, v, [&] { return "dedup value " + std::to_string(lsn_of(k)); }));
}

uint64_t Store::truncate_from(uint64_t from) {
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, 0);
  uint64_t deleted = 0;
  {
    Cursor c(txn.get(), env_->log);
    unsigned char key[8];
    lsn_key(from, key);
    MDB_val k = val(key, 8), v;
    bool more = c.get(&k, &v, MDB_SET_RANGE);
    while (more) {
      check(mdb_cursor_del(c.raw(), 0), "truncate log");
      ++deleted;
      k = val(key, 8);  // seek again: the simplest position to trust after a delete
      more = c.get(&k, &v, MDB_SET_RANGE);
    }
  }
  txn.commit();
  return deleted;
}

std::optional<std::string> Store::meta(const std::string& key) const {
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, MDB_RDONLY);
  MDB_val k = val(key.data(), key.size()), v;
  int rc = mdb_get(txn.get(), env_->meta, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  check(rc, "read meta '" + key + "'");
  return std::string(static_cast<const char*>(v.mv_data), v.mv_size);
}

void Store::index_scan_from(IndexDb db, std::span<const uint8_t> from,
                            const std::function<bool(std::span<const uint8_t>, std::span<const uint8_t>)>& f) const {
  if (!env_->has_lookup) return;
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, MDB_RDONLY);
  Cursor c(txn.get(), env_->index(db));
  MDB_val k, v;
  bool more;
  if (from.empty()) {
    more = c.get(&k, &v, MDB_FIRST);
  } else {
    k = val(from.data(), from.size());
    more = c.get(&k, &v, MDB_SET_RANGE);
    if (!more) {
      more = c.get(&k, &v, MDB_LAST);  // every key is below `from`: the last may hold it
    } else if (!std::ranges::equal(bytes_of(k), from)) {
      MDB_val pk, pv;
      if (c.get(&pk, &pv, MDB_PREV)) {
        k = pk;
        v = pv;
      } else {  // nothing before: back to the first
        more = c.get(&k, &v, MDB_FIRST);
      }
    }
  }
  for (; more; more = c.get(&k, &v, MDB_NEXT))
    if (!f(bytes_of(k), bytes_of(v))) break;
}

std::vector<std::pair<std::string, std::string>> Store::meta_with_prefix(const std::string& prefix) const {
  std::vector<std::pair<std::string, std::string>> out;
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, MDB_RDONLY);
  Cursor c(txn.get(), env_->meta);
  MDB_val k = val(prefix.data(), prefix.size()), v;
  for (bool more = c.get(&k, &v, MDB_SET_RANGE); more; more = c.get(&k, &v, MDB_NEXT)) {
    std::string key(static_cast<const char*>(k.mv_data), k.mv_size);
    if (key.compare(0, prefix.size(), prefix) != 0) break;
    out.emplace_back(std::move(key), std::string(static_cast<const char*>(v.mv_data), v.mv_size));
  }
  return out;
}

uint64_t Store::first_lsn() const {
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, MDB_RDONLY);
  Cursor c(txn.get(), env_->log);
  MDB_val k, v;
  return c.get(&k, &v, MDB_FIRST) ? lsn_of(k) : 0;
}

uint64_t Store::last_lsn() const {
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, MDB_RDONLY);
  Cursor c(txn.get(), env_->log);
  MDB_val k, v;
  return c.get(&k, &v, MDB_LAST) ? lsn_of(k) : 0;
}

void Store::scan(uint64_t from, const std::function<bool(uint64_t, std::span<const uint8_t>)>& f) const {
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, MDB_RDONLY);
  Cursor c(txn.get(), env_->log);
  unsigned char key[8];
  lsn_key(from, key);
  MDB_val k = val(key, 8), v;
  for (bool more = c.get(&k, &v, MDB_SET_RANGE); more; more = c.get(&k, &v, MDB_NEXT)) {
    if (!f(lsn_of(k), bytes_of(v))) break;
  }
}

std::vector<uint8_t> Store::batch(uint64_t lsn) const {
  std::shared_lock lock(resize_mutex_);
  Txn txn(env_->env, MDB_RDONLY);
  unsigned char key[8];
  lsn_key(lsn, key);
  MDB_val k = val(key, 8), v;
  int rc = mdb_get(txn.get(), env_->log, &k, &v);
  if (rc == MDB_NOTFOUND) return {};
  check(rc, "read log batch " + std::to_string(lsn));
  auto b = bytes_of(v);
  return {b.begin(), b.end()};
}

StoreStats Store::stats() const {
  StoreStats s;
  s.path = options_.dir;
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(env_->env, &info);
  mdb_env_stat(env_->env, &st);
  s.map_size = info.me_mapsize;
  s.page_size = st.ms_psize;
  s.used_bytes = (static_cast<uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
  {
    std::shared_lock lock(resize_mutex_);
    Txn txn(env_->env, MDB_RDONLY);
    MDB_stat ls;
    check(mdb_stat(txn.get(), env_->log, &ls), "stat log");
    s.log_batches = ls.ms_entries;
    s.log_bytes = (ls.ms_branch_pages + ls.ms_leaf_pages + ls.ms_overflow_pages) * uint64_t{ls.ms_psize};
    check(mdb_stat(txn.get(), env_->accounts, &ls), "stat accounts");
    s.slice_versions = ls.ms_entries;
    s.checkpoint_bytes = (ls.ms_branch_pages + ls.ms_leaf_pages + ls.ms_overflow_pages) * uint64_t{ls.ms_psize};
    check(mdb_stat(txn.get(), env_->dedup, &ls), "stat dedup");
    s.dedup_values = ls.ms_entries;
    s.dedup_bytes = (ls.ms_branch_pages + ls.ms_leaf_pages + ls.ms_overflow_pages) * uint64_t{ls.ms_psize};
    check(mdb_stat(txn.get(), env_->history, &ls), "stat history");
    s.history_entries = ls.ms_entries;
    s.index_bytes = (ls.ms_branch_pages + ls.ms_leaf_pages + ls.ms_overflow_pages) * uint64_t{ls.ms_psize};
    if (env_->has_lookup) {
      check(mdb_stat(txn.get(), env_->lookup, &ls), "stat lookup");
      s.index_bytes += (ls.ms_branch_pages + ls.ms_leaf_pages + ls.ms_overflow_pages) * uint64_t{ls.ms_psize};
    }
  }
  s.first_lsn = first_lsn();
  s.last_lsn = last_lsn();
  s.flags = "MDB_NOTLS";
  if (env_->flags & MDB_NOSYNC) s.flags += "|MDB_NOSYNC (unsafe)";
  if (env_->flags & MDB_RDONLY) s.flags += "|MDB_RDONLY";
  if (!(env_->flags & MDB_NOSYNC)) s.flags += " (durable defaults: sync on commit, meta via O_DSYNC)";
  return s;
}

void Store::backup(const std::string& to) const {
  std::error_code ec;
  std::filesystem::create_directories(to, ec);
  if (ec) throw StorageError("cannot create backup directory " + to + ": " + ec.message(), ec.value());
  if (std::filesystem::exists(std::filesystem::path(to) / "data.mdb", ec))
    throw StorageError("backup directory " + to + " already holds a data.mdb; refusing to overwrite", EEXIST);
  // mdb_env_copy2 runs its own read transaction: hold off map growth while it does.
  std::shared_lock lock(resize_mutex_);
  check(mdb_env_copy2(env_->env, to.c_str(), MDB_CP_COMPACT), "copy environment to " + to);
  // LMDB writes the copy with plain writes: make it durable before anyone relies on it.
  std::string file = (std::filesystem::path(to) / "data.mdb").string();
  int fd = ::open(file.c_str(), O_RDONLY);
  if (fd < 0 || ::fsync(fd) != 0) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    throw StorageError("fsync backup " + file + ": " + std::strerror(err), err);
  }
  ::close(fd);
  int dfd = ::open(to.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace tally::storage
