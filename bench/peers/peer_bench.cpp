// tally-peer-bench: the loyalty mix against a peer Tally is compared with (issue 6): Redis 7 with
// Lua scripts, or PostgreSQL 15 with plpgsql functions, on 127.0.0.1 (bench/peers/run starts
// private instances and runs this once per configuration; docs/benchmarks.md, "Peers").
//
// One peer per invocation. It resets the peer's data and loads N members with 500 points each,
// then drives the same events as tally-bench (bench::Generator's loyalty mix: same seed, same
// events; tally-bench run with --retries 0) in a closed loop, from one thread over C connections
// with poll(), in one of two shapes:
//   POS      (--batch 1) one operation per request. Redis: EVALSHA of the earn or the redeem
//            script, HGET for a balance, --pipeline P requests in flight per connection.
//            PostgreSQL: earn(...), redeem(...) or the balance query, one request in flight each.
//   batched  (--batch B) one call applies a frame of B operations and answers each of them: one
//            EVALSHA of the frame script, or one SELECT apply_frame(arrays).
// Every reply is checked: exactly one use of each order reference is accepted and every other use
// comes back duplicate, a redeem is rejected only when the balance it saw was short, an accepted
// earn credits floor(amount / 100). At the end every member's balance, the sum over all members and
// the number of claimed references are read back from the peer and compared with what the replies
// said: any mismatch fails the run (exit 1), so a fast wrong answer never counts. It prints
// throughput, per-request latency (engine/histogram.h) and one JSON line ({"peer_bench":{...}}).
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bench/workload.h"
#include "engine/histogram.h"

namespace {

using namespace tally;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage = R"(Usage: tally-peer-bench --peer redis|postgres --port N [options]

Loads a private Redis 7 or PostgreSQL 15 on 127.0.0.1 with the loyalty mix (shared/WORKLOAD.md;
the events of tally-bench --retries 0 for the same seed), closed loop, and prints throughput and
per-request latency. Resets the peer's data first (N members with 500 points each). Checks every
reply and, at the end, every member's balance, their sum and the claimed order references against
the replies: exit 1 on any mismatch, 2 on a usage or setup error.

Peer:
  --peer NAME        redis (earn and redeem as Lua scripts, SET NX per order reference, balances
                     in one hash) or postgres (plpgsql functions over accounts and orders tables)
  --port N           the peer's port on 127.0.0.1
  --pg-user U        postgres: the role to connect as (default postgres; trust authentication)

Load:
  --connections N    connections (default 1)
  --pipeline N       redis: requests in flight per connection (default 1); postgres: 1 only
  --batch N          operations per request (default 1, the POS shape; 1000: the batched shape,
                     one script or function call per frame)
  --accounts N       members (default 1000000)
  --zipf S           account choice Zipf (bench::Generator's, s = 1.01; default uniform)
  --warmup S         seconds not measured (default 2)
  --duration S       seconds measured (default 10)
  --events N         events generated before the run (default 1000000; more are generated on
                     demand, continuing the same stream)
  --seed N           workload seed (default 1)
  --negative-control expect one point more for member 1: the read-back must fail (exit 1),
                     proving the check is alive
  -h, --help         this text
)";

constexpr int64_t kOk = 0;
constexpr int64_t kDuplicate = 1;
constexpr int64_t kInsufficient = 2;

// An error as a value: empty when all went well.
struct Error {
  std::string message;
  explicit operator bool() const { return !message.empty(); }
};

// What the peer answered for one operation: a code (kOk, kDuplicate, kInsufficient), the points
// credited or debited, and the balance the operation saw or left.
struct OpReply {
  int64_t code = kOk;
  int64_t points = 0;
  int64_t balance = 0;
};
using OnReply = std::function<void(std::span<const OpReply>)>;

// One connection to the peer, nonblocking: requests go out in order, replies come back in order.
class Channel {
 public:
  virtual ~Channel() = default;
  virtual int fd() const = 0;
  virtual bool wants_write() const = 0;
  // Queues one request applying `ops` (serialised now: the span need not outlive the call).
  virtual Error send(std::span<const Event> ops) = 0;
  // Writes what the socket takes.
  virtual Error flush() = 0;
  // Reads what arrived; calls on_reply once per completed request, in request order.
  virtual Error receive(const OnReply& on_reply) = 0;
  // Requests the peer asked to retry (PostgreSQL: deadlock or serialisation failure), resent.
  virtual uint64_t retries() const { return 0; }
};

// What the peer's data says at the end.
struct PeerState {
  std::vector<int64_t> balances;  // [account], 1..N
  uint64_t orders = 0;            // claimed order references
};

bool parse_i64(std::string_view s, int64_t* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

// The 128-bit reference as 32 hex digits (hi, then lo): a Redis key.
void ref_hex(const Ref128& r, char out[32]) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) {
    out[i] = kHex[(r.hi >> (60 - 4 * i)) & 0xf];
    out[16 + i] = kHex[(r.lo >> (60 - 4 * i)) & 0xf];
  }
}

// ---------------------------------------------------------------------------------------------
// Redis 7: balances are fields of one hash (field: the member id in decimal), each order reference
// a key of its own (32 hex digits) claimed with SET NX. Scripts are loaded with SCRIPT LOAD and
// called with EVALSHA; every key they touch is passed in KEYS.

constexpr char kBalancesKey[] = "tally:balances";

// KEYS[1] order reference, KEYS[2] balances; ARGV[1] member, ARGV[2] amount in cents.
constexpr char kRedisEarn[] = R"lua(
if not redis.call('SET', KEYS[1], '1', 'NX') then return {1, 0, 0} end
local p = math.floor(tonumber(ARGV[2]) / 100)
return {0, p, redis.call('HINCRBY', KEYS[2], ARGV[1], p)}
)lua";

// KEYS[1] order reference, KEYS[2] balances; ARGV[1] member, ARGV[2] points. A rejected redeem
// does not claim its reference.
constexpr char kRedisRedeem[] = R"lua(
local p = tonumber(ARGV[2])
local b = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if b < p then return {2, 0, b} end
if not redis.call('SET', KEYS[1], '1', 'NX') then return {1, 0, b} end
return {0, p, redis.call('HINCRBY', KEYS[2], ARGV[1], -p)}
)lua";

// A frame: KEYS[1] balances, KEYS[1 + i] operation i's order reference (the balances key again
// for a read); ARGV[3i-2..3i] kind (e, r or b), member, amount or points. Answers 3 integers per
// operation: code, points, balance.
constexpr char kRedisFrame[] = R"lua(
local h = KEYS[1]
local out = {}
for i = 1, #KEYS - 1 do
  local k, a, v, o = ARGV[3*i-2], ARGV[3*i-1], tonumber(ARGV[3*i]), KEYS[i+1]
  local c, p, b = 0, 0, 0
  if k == 'e' then
    if redis.call('SET', o, '1', 'NX') then
      p = math.floor(v / 100)
      b = redis.call('HINCRBY', h, a, p)
    else
      c = 1
    end
  elseif k == 'r' then
    b = tonumber(redis.call('HGET', h, a) or '0')
    if b < v then
      c = 2
    elseif not redis.call('SET', o, '1', 'NX') then
      c = 1
    else
      p = v
      b = redis.call('HINCRBY', h, a, -v)
    end
  else
    b = tonumber(redis.call('HGET', h, a) or '0')
  end
  out[3*i-2], out[3*i-1], out[3*i] = c, p, b
end
return out
)lua";

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;
struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct RedisScripts {
  std::string earn, redeem, frame;  // SHA1s
};

// A command's arguments, built into one buffer.
class Args {
 public:
  void clear() {
    buf_.clear();
    ends_.clear();
  }
  void add(std::string_view s) {
    buf_.append(s);
    ends_.push_back(buf_.size());
  }
  void add(int64_t v) {
    char tmp[24];
    auto [p, ec] = std::to_chars(tmp, tmp + sizeof tmp, v);
    add(std::string_view(tmp, static_cast<size_t>(p - tmp)));
  }
  void add_ref(const Ref128& r) {
    char tmp[32];
    ref_hex(r, tmp);
    add(std::string_view(tmp, sizeof tmp));
  }
  // Pointers into the buffer: valid until the next add or clear.
  int argv(std::vector<const char*>* ptrs, std::vector<size_t>* lens) const {
    ptrs->clear();
    lens->clear();
    size_t start = 0;
    for (size_t end : ends_) {
      ptrs->push_back(buf_.data() + start);
      lens->push_back(end - start);
      start = end;
    }
    return static_cast<int>(ends_.size());
  }

 private:
  std::string buf_;
  std::vector<size_t> ends_;
};

Error redis_error(const redisContext* c, std::string_view what) {
  return Error{"redis: " + std::string(what) + ": " + (c->err ? c->errstr : "no reply")};
}

// A blocking connection for set-up and read-back.
class RedisAdmin {
 public:
  static ContextPtr connect(uint16_t port, Error* err) {
    timeval tv{10, 0};
    ContextPtr c(redisConnectWithTimeout("127.0.0.1", port, tv));
    if (!c || c->err) {
      *err = Error{"redis: connect to 127.0.0.1:" + std::to_string(port) + ": " +
                   (c ? c->errstr : "out of memory")};
      return nullptr;
    }
    redisSetTimeout(c.get(), timeval{120, 0});
    return c;
  }
  // One command; a Redis error reply is an error too.
  static ReplyPtr command(redisContext* c, const Args& a, Error* err) {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    int n = a.argv(&ptrs, &lens);
    ReplyPtr r(static_cast<redisReply*>(redisCommandArgv(c, n, ptrs.data(), lens.data())));
    if (!r) {
      *err = redis_error(c, std::string(ptrs[0], lens[0]));
      return nullptr;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      *err = Error{"redis: " + std::string(ptrs[0], lens[0]) + ": " + std::string(r->str, r->len)};
      return nullptr;
    }
    return r;
  }
};

Error redis_setup(uint16_t port, uint64_t accounts, RedisScripts* scripts,
                  std::string* durability) {
  Error err;
  ContextPtr c = RedisAdmin::connect(port, &err);
  if (!c) return err;
  Args a;
  for (const char* key : {"appendonly", "appendfsync"}) {
    a.clear();
    a.add("CONFIG");
    a.add("GET");
    a.add(key);
    ReplyPtr r = RedisAdmin::command(c.get(), a, &err);
    if (!r) return err;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
      return Error{"redis: CONFIG GET: odd reply"};
    if (!durability->empty()) *durability += ' ';
    *durability += std::string(key) + "=" + r->element[1]->str;
  }
  a.clear();
  a.add("FLUSHALL");
  a.add("SYNC");
  if (!RedisAdmin::command(c.get(), a, &err)) return err;
  // The members, 1000 fields per HSET, 100 commands in flight.
  constexpr uint64_t kPerCommand = 1000;
  constexpr uint64_t kInFlight = 100;
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  uint64_t queued = 0;
  for (uint64_t first = 1; first <= accounts || queued > 0;) {
    while (first <= accounts && queued < kInFlight) {
      a.clear();
      a.add("HSET");
      a.add(kBalancesKey);
      for (uint64_t m = first; m < first + kPerCommand && m <= accounts; ++m) {
        a.add(static_cast<int64_t>(m));
        a.add(bench::kStartPoints);
      }
      first += kPerCommand;
      int n = a.argv(&ptrs, &lens);
      if (redisAppendCommandArgv(c.get(), n, ptrs.data(), lens.data()) != REDIS_OK)
        return redis_error(c.get(), "HSET");
      ++queued;
    }
    void* raw = nullptr;
    if (redisGetReply(c.get(), &raw) != REDIS_OK) return redis_error(c.get(), "HSET");
    ReplyPtr r(static_cast<redisReply*>(raw));
    if (r->type == REDIS_REPLY_ERROR) return Error{"redis: HSET: " + std::string(r->str, r->len)};
    --queued;
  }
  auto load = [&](const char* body, std::string* sha) -> Error {
    Args s;
    s.add("SCRIPT");
    s.add("LOAD");
    s.add(body);
    Error e;
    ReplyPtr r = RedisAdmin::command(c.get(), s, &e);
    if (!r) return e;
    if (r->type != REDIS_REPLY_STRING) return Error{"redis: SCRIPT LOAD: odd reply"};
    *sha = std::string(r->str, r->len);
    return {};
  };
  if (Error e = load(kRedisEarn, &scripts->earn)) return e;
  if (Error e = load(kRedisRedeem, &scripts->redeem)) return e;
  return load(kRedisFrame, &scripts->frame);
}

Error redis_read_back(uint16_t port, uint64_t accounts, PeerState* out) {
  Error err;
  ContextPtr c = RedisAdmin::connect(port, &err);
  if (!c) return err;
  Args a;
  a.add("HGETALL");
  a.add(kBalancesKey);
  ReplyPtr r = RedisAdmin::command(c.get(), a, &err);
  if (!r) return err;
  if (r->type != REDIS_REPLY_ARRAY) return Error{"redis: HGETALL: odd reply"};
  out->balances.assign(accounts + 1, 0);
  uint64_t fields = 0;
  for (size_t i = 0; i + 1 < r->elements; i += 2) {
    int64_t id = 0, balance = 0;
    if (!parse_i64({r->element[i]->str, r->element[i]->len}, &id) ||
        !parse_i64({r->element[i + 1]->str, r->element[i + 1]->len}, &balance) || id < 1 ||
        static_cast<uint64_t>(id) > accounts)
      return Error{"redis: HGETALL: a field that is not a member"};
    out->balances[static_cast<size_t>(id)] = balance;
    ++fields;
  }
  if (fields != accounts)
    return Error{"redis: " + std::to_string(fields) + " members, expected " +
                 std::to_string(accounts)};
  a.clear();
  a.add("DBSIZE");
  r = RedisAdmin::command(c.get(), a, &err);
  if (!r) return err;
  if (r->type != REDIS_REPLY_INTEGER || r->integer < 1) return Error{"redis: DBSIZE: odd reply"};
  out->orders = static_cast<uint64_t>(r->integer - 1);  // every key but the balances hash
  return {};
}

class RedisChannel : public Channel {
 public:
  static std::unique_ptr<Channel> open(uint16_t port, const RedisScripts& scripts, Error* err) {
    auto ch = std::unique_ptr<RedisChannel>(new RedisChannel(scripts));
    ch->c_.reset(redisConnectNonBlock("127.0.0.1", port));
    if (!ch->c_ || ch->c_->err) {
      *err = Error{"redis: connect: " + std::string(ch->c_ ? ch->c_->errstr : "out of memory")};
      return nullptr;
    }
    return ch;
  }
  int fd() const override { return c_->fd; }
  bool wants_write() const override { return write_pending_; }

  Error send(std::span<const Event> ops) override {
    args_.clear();
    Kind kind = Kind::kFrame;
    if (ops.size() == 1 && ops[0].kind == EventKind::kBalance) {
      kind = Kind::kBalance;
      args_.add("HGET");
      args_.add(kBalancesKey);
      args_.add(static_cast<int64_t>(ops[0].account));
    } else if (ops.size() == 1) {
      kind = Kind::kOne;
      args_.add("EVALSHA");
      args_.add(ops[0].kind == EventKind::kEarn ? scripts_.earn : scripts_.redeem);
      args_.add(2);
      args_.add_ref(ops[0].ref);
      args_.add(kBalancesKey);
      args_.add(static_cast<int64_t>(ops[0].account));
      args_.add(ops[0].amount);
    } else {
      args_.add("EVALSHA");
      args_.add(scripts_.frame);
      args_.add(static_cast<int64_t>(ops.size() + 1));
      args_.add(kBalancesKey);
      for (const Event& e : ops) {
        if (e.kind == EventKind::kBalance) {
          args_.add(kBalancesKey);
        } else {
          args_.add_ref(e.ref);
        }
      }
      for (const Event& e : ops) {
        args_.add(e.kind == EventKind::kEarn ? "e" : e.kind == EventKind::kRedeem ? "r" : "b");
        args_.add(static_cast<int64_t>(e.account));
        args_.add(e.amount);
      }
    }
    int n = args_.argv(&ptrs_, &lens_);
    if (redisAppendCommandArgv(c_.get(), n, ptrs_.data(), lens_.data()) != REDIS_OK)
      return redis_error(c_.get(), "append");
    inflight_.push_back({kind, ops.size()});
    write_pending_ = true;
    return {};
  }

  Error flush() override {
    int done = 0;
    if (redisBufferWrite(c_.get(), &done) != REDIS_OK) return redis_error(c_.get(), "write");
    write_pending_ = !done;
    return {};
  }

  Error receive(const OnReply& on_reply) override {
    if (redisBufferRead(c_.get()) != REDIS_OK) return redis_error(c_.get(), "read");
    for (;;) {
      void* raw = nullptr;
      if (redisGetReply(c_.get(), &raw) != REDIS_OK) return redis_error(c_.get(), "reply");
      if (raw == nullptr) return {};
      ReplyPtr r(static_cast<redisReply*>(raw));
      if (inflight_.empty()) return Error{"redis: a reply nobody asked for"};
      Pending p = inflight_.front();
      inflight_.pop_front();
      if (Error e = parse(p, r.get())) return e;
      on_reply(replies_);
    }
  }

 private:
  enum class Kind { kBalance, kOne, kFrame };
  struct Pending {
    Kind kind;
    size_t ops;
  };
  explicit RedisChannel(const RedisScripts& scripts) : scripts_(scripts) {}

  Error parse(const Pending& p, const redisReply* r) {
    replies_.assign(p.ops, OpReply{});
    if (r->type == REDIS_REPLY_ERROR) return Error{"redis: " + std::string(r->str, r->len)};
    if (p.kind == Kind::kBalance) {
      if (r->type != REDIS_REPLY_STRING || !parse_i64({r->str, r->len}, &replies_[0].balance))
        return Error{"redis: HGET: not a balance (a member missing?)"};
      return {};
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 * p.ops)
      return Error{"redis: a script answered the wrong number of results"};
    for (size_t i = 0; i < p.ops; ++i) {
      for (size_t j = 0; j < 3; ++j)
        if (r->element[3 * i + j]->type != REDIS_REPLY_INTEGER)
          return Error{"redis: a script answered a non-integer"};
      replies_[i] = {r->element[3 * i]->integer, r->element[3 * i + 1]->integer,
                     r->element[3 * i + 2]->integer};
    }
    return {};
  }

  ContextPtr c_;
  const RedisScripts& scripts_;
  Args args_;
  std::vector<const char*> ptrs_;
  std::vector<size_t> lens_;
  std::deque<Pending> inflight_;
  std::vector<OpReply> replies_;
  bool write_pending_ = false;
};

// ---------------------------------------------------------------------------------------------
// PostgreSQL 15: accounts(id, balance) and orders(lo, hi) with the reference as its primary key;
// plpgsql functions answer (code, points, balance). READ COMMITTED, as a team would run it.

constexpr char kPgSchema[] = R"sql(
DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS accounts;
CREATE TABLE accounts (id bigint NOT NULL, balance bigint NOT NULL) WITH (fillfactor = 70);
CREATE TABLE orders (lo bigint NOT NULL, hi bigint NOT NULL, PRIMARY KEY (lo, hi));
)sql";

constexpr char kPgFunctions[] = R"sql(
CREATE OR REPLACE FUNCTION earn(a bigint, rlo bigint, rhi bigint, amount bigint,
                                OUT code int, OUT pts bigint, OUT bal bigint)
LANGUAGE plpgsql AS $$
BEGIN
  code := 0; pts := 0; bal := 0;
  INSERT INTO orders (lo, hi) VALUES (rlo, rhi) ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN code := 1; RETURN; END IF;
  pts := amount / 100;
  UPDATE accounts SET balance = balance + pts WHERE id = a RETURNING balance INTO bal;
  IF NOT FOUND THEN RAISE EXCEPTION 'no member %', a; END IF;
END $$;

-- The rejection is decided on the balance it reports (a fresh read when a concurrent change made
-- the checked decrement miss); a rejected redeem does not claim its reference.
CREATE OR REPLACE FUNCTION redeem(a bigint, rlo bigint, rhi bigint, points bigint,
                                  OUT code int, OUT pts bigint, OUT bal bigint)
LANGUAGE plpgsql AS $$
BEGIN
  code := 0; pts := 0;
  LOOP
    SELECT balance INTO bal FROM accounts WHERE id = a;
    IF NOT FOUND THEN RAISE EXCEPTION 'no member %', a; END IF;
    IF bal < points THEN code := 2; RETURN; END IF;
    UPDATE accounts SET balance = balance - points WHERE id = a AND balance >= points
      RETURNING balance INTO bal;
    EXIT WHEN FOUND;
  END LOOP;
  INSERT INTO orders (lo, hi) VALUES (rlo, rhi) ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    -- The reference is taken: undo the decrement in the same transaction, so nobody sees it.
    UPDATE accounts SET balance = balance + points WHERE id = a RETURNING balance INTO bal;
    code := 1; RETURN;
  END IF;
  pts := points;
END $$;

-- A frame: kinds 0 earn, 1 redeem, 2 balance; answers 3 values per operation (code, points,
-- balance). The frame's members are locked first, in id order, so concurrent frames do not
-- deadlock on them.
CREATE OR REPLACE FUNCTION apply_frame(kinds int[], accts bigint[], los bigint[], his bigint[],
                                       vals bigint[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  n int := cardinality(kinds);
  res bigint[] := array_fill(0::bigint, ARRAY[3 * n]);
  b bigint;
  p bigint;
BEGIN
  PERFORM 1 FROM accounts WHERE id = ANY (accts) ORDER BY id FOR UPDATE;
  FOR i IN 1 .. n LOOP
    IF kinds[i] = 0 THEN
      INSERT INTO orders (lo, hi) VALUES (los[i], his[i]) ON CONFLICT DO NOTHING;
      IF FOUND THEN
        p := vals[i] / 100;
        UPDATE accounts SET balance = balance + p WHERE id = accts[i] RETURNING balance INTO b;
        IF NOT FOUND THEN RAISE EXCEPTION 'no member %', accts[i]; END IF;
        res[3*i-1] := p; res[3*i] := b;
      ELSE
        res[3*i-2] := 1;
      END IF;
    ELSIF kinds[i] = 1 THEN
      SELECT balance INTO b FROM accounts WHERE id = accts[i];
      IF NOT FOUND THEN RAISE EXCEPTION 'no member %', accts[i]; END IF;
      IF b < vals[i] THEN
        res[3*i-2] := 2; res[3*i] := b;
      ELSE
        INSERT INTO orders (lo, hi) VALUES (los[i], his[i]) ON CONFLICT DO NOTHING;
        IF FOUND THEN
          UPDATE accounts SET balance = balance - vals[i] WHERE id = accts[i]
            RETURNING balance INTO b;
          res[3*i-1] := vals[i]; res[3*i] := b;
        ELSE
          res[3*i-2] := 1; res[3*i] := b;
        END IF;
      END IF;
    ELSE
      SELECT balance INTO b FROM accounts WHERE id = accts[i];
      IF NOT FOUND THEN RAISE EXCEPTION 'no member %', accts[i]; END IF;
      res[3*i] := b;
    END IF;
  END LOOP;
  RETURN res;
END $$;
)sql";

struct PgDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using PgPtr = std::unique_ptr<PGconn, PgDeleter>;
struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

std::string pg_conninfo(uint16_t port, const std::string& user) {
  return "host=127.0.0.1 port=" + std::to_string(port) + " user=" + user +
         " dbname=postgres connect_timeout=10 application_name=tally-peer-bench";
}

PgPtr pg_connect(uint16_t port, const std::string& user, Error* err) {
  PgPtr c(PQconnectdb(pg_conninfo(port, user).c_str()));
  if (!c || PQstatus(c.get()) != CONNECTION_OK) {
    *err = Error{"postgres: connect: " + std::string(c ? PQerrorMessage(c.get()) : "no memory")};
    return nullptr;
  }
  return c;
}

// A statement (or several) on a blocking connection; tuples are returned, errors are values.
PgResultPtr pg_exec(PGconn* c, const char* sql, Error* err) {
  PgResultPtr r(PQexec(c, sql));
  ExecStatusType s = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
    *err = Error{"postgres: " + std::string(PQerrorMessage(c))};
    return nullptr;
  }
  return r;
}

Error pg_setup(uint16_t port, const std::string& user, uint64_t accounts, std::string* durability) {
  Error err;
  PgPtr c = pg_connect(port, user, &err);
  if (!c) return err;
  for (const char* setting : {"fsync", "synchronous_commit"}) {
    PgResultPtr r = pg_exec(c.get(), (std::string("SHOW ") + setting).c_str(), &err);
    if (!r) return err;
    if (!durability->empty()) *durability += ' ';
    *durability += std::string(setting) + "=" + PQgetvalue(r.get(), 0, 0);
  }
  if (!pg_exec(c.get(), "SET client_min_messages = warning", &err)) return err;
  if (!pg_exec(c.get(), kPgSchema, &err)) return err;
  std::string load = "INSERT INTO accounts SELECT g, " + std::to_string(bench::kStartPoints) +
                     " FROM generate_series(1, " + std::to_string(accounts) + ") g";
  if (!pg_exec(c.get(), load.c_str(), &err)) return err;
  if (!pg_exec(c.get(), "ALTER TABLE accounts ADD PRIMARY KEY (id)", &err)) return err;
  if (!pg_exec(c.get(), kPgFunctions, &err)) return err;
  if (!pg_exec(c.get(), "VACUUM (ANALYZE) accounts", &err)) return err;
  // The load's dirty pages written now, not by a checkpoint in the middle of the run.
  if (!pg_exec(c.get(), "CHECKPOINT", &err)) return err;
  return {};
}

Error pg_read_back(uint16_t port, const std::string& user, uint64_t accounts, PeerState* out) {
  Error err;
  PgPtr c = pg_connect(port, user, &err);
  if (!c) return err;
  PgResultPtr r = pg_exec(c.get(), "SELECT id, balance FROM accounts", &err);
  if (!r) return err;
  if (static_cast<uint64_t>(PQntuples(r.get())) != accounts)
    return Error{"postgres: " + std::to_string(PQntuples(r.get())) + " members, expected " +
                 std::to_string(accounts)};
  out->balances.assign(accounts + 1, 0);
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    int64_t id = 0, balance = 0;
    if (!parse_i64(PQgetvalue(r.get(), i, 0), &id) ||
        !parse_i64(PQgetvalue(r.get(), i, 1), &balance) || id < 1 ||
        static_cast<uint64_t>(id) > accounts)
      return Error{"postgres: a row that is not a member"};
    out->balances[static_cast<size_t>(id)] = balance;
  }
  r = pg_exec(c.get(), "SELECT count(*) FROM orders", &err);
  if (!r) return err;
  int64_t n = 0;
  if (!parse_i64(PQgetvalue(r.get(), 0, 0), &n)) return Error{"postgres: count(*): odd reply"};
  out->orders = static_cast<uint64_t>(n);
  return {};
}

class PgChannel : public Channel {
 public:
  static std::unique_ptr<Channel> open(uint16_t port, const std::string& user, Error* err) {
    auto ch = std::unique_ptr<PgChannel>(new PgChannel());
    ch->c_ = pg_connect(port, user, err);
    if (!ch->c_) return nullptr;
    struct Statement {
      const char* name;
      const char* sql;
      int params;
    };
    for (const Statement& s : {
             Statement{"earn", "SELECT code, pts, bal FROM earn($1, $2, $3, $4)", 4},
             Statement{"redeem", "SELECT code, pts, bal FROM redeem($1, $2, $3, $4)", 4},
             Statement{"balance", "SELECT 0, 0, balance FROM accounts WHERE id = $1", 1},
             Statement{"frame", "SELECT apply_frame($1, $2, $3, $4, $5)", 5},
         }) {
      PgResultPtr r(PQprepare(ch->c_.get(), s.name, s.sql, s.params, nullptr));
      if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
        *err =
            Error{"postgres: prepare " + std::string(s.name) + ": " + PQerrorMessage(ch->c_.get())};
        return nullptr;
      }
    }
    if (PQsetnonblocking(ch->c_.get(), 1) != 0) {
      *err = Error{"postgres: nonblocking: " + std::string(PQerrorMessage(ch->c_.get()))};
      return nullptr;
    }
    return ch;
  }
  int fd() const override { return PQsocket(c_.get()); }
  bool wants_write() const override { return write_pending_; }
  uint64_t retries() const override { return retries_; }

  Error send(std::span<const Event> ops) override {
    if (inflight_) return Error{"postgres: one request in flight per connection"};
    params_.clear();
    ops_ = ops.size();
    if (ops.size() == 1) {
      const Event& e = ops[0];
      params_.push_back(std::to_string(e.account));
      if (e.kind == EventKind::kBalance) {
        statement_ = "balance";
      } else {
        statement_ = e.kind == EventKind::kEarn ? "earn" : "redeem";
        params_.push_back(std::to_string(static_cast<int64_t>(e.ref.lo)));
        params_.push_back(std::to_string(static_cast<int64_t>(e.ref.hi)));
        params_.push_back(std::to_string(e.amount));
      }
    } else {
      statement_ = "frame";
      params_.assign(5, "{");
      for (const Event& e : ops) {
        int kind = e.kind == EventKind::kEarn ? 0 : e.kind == EventKind::kRedeem ? 1 : 2;
        const int64_t values[5] = {kind, static_cast<int64_t>(e.account),
                                   static_cast<int64_t>(e.ref.lo), static_cast<int64_t>(e.ref.hi),
                                   e.amount};
        for (int k = 0; k < 5; ++k) {
          char tmp[24];
          auto [p, ec] = std::to_chars(tmp, tmp + sizeof tmp, values[k]);
          params_[k].append(tmp, p);
          params_[k].push_back(',');
        }
      }
      for (std::string& p : params_) p.back() = '}';
    }
    return start();
  }

  Error flush() override {
    int r = PQflush(c_.get());
    if (r < 0) return Error{"postgres: write: " + std::string(PQerrorMessage(c_.get()))};
    write_pending_ = r == 1;
    return {};
  }

  Error receive(const OnReply& on_reply) override {
    if (PQconsumeInput(c_.get()) == 0)
      return Error{"postgres: read: " + std::string(PQerrorMessage(c_.get()))};
    while (inflight_ && !PQisBusy(c_.get())) {
      PgResultPtr r(PQgetResult(c_.get()));
      if (r) {
        if (Error e = take(r.get())) return e;
        continue;
      }
      // The request is complete.
      inflight_ = false;
      if (!error_.empty()) return Error{"postgres: " + error_};
      if (retry_) {
        ++retries_;
        if (Error e = start()) return e;
        continue;
      }
      if (!got_) return Error{"postgres: a request answered nothing"};
      on_reply(replies_);  // may send the next request
    }
    return {};
  }

 private:
  PgChannel() = default;

  Error start() {
    std::vector<const char*> values;
    for (const std::string& p : params_) values.push_back(p.c_str());
    if (!PQsendQueryPrepared(c_.get(), statement_, static_cast<int>(values.size()), values.data(),
                             nullptr, nullptr, 0))
      return Error{"postgres: send: " + std::string(PQerrorMessage(c_.get()))};
    inflight_ = true;
    retry_ = false;
    got_ = false;
    error_.clear();
    write_pending_ = true;
    return flush();
  }

  Error take(const PGresult* r) {
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_FATAL_ERROR) {
      const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      // Deadlock detected, serialisation failure: the transaction was rolled back; try again.
      if (state && (std::strcmp(state, "40P01") == 0 || std::strcmp(state, "40001") == 0))
        retry_ = true;
      else
        error_ = PQresultErrorMessage(r);
      return {};
    }
    if (s != PGRES_TUPLES_OK || PQntuples(r) != 1) {
      error_ = "a request did not answer one row";
      return {};
    }
    replies_.assign(ops_, OpReply{});
    got_ = true;
    if (ops_ == 1) {
      if (PQnfields(r) != 3 || PQgetisnull(r, 0, 2) ||
          !parse_i64(PQgetvalue(r, 0, 0), &replies_[0].code) ||
          !parse_i64(PQgetvalue(r, 0, 1), &replies_[0].points) ||
          !parse_i64(PQgetvalue(r, 0, 2), &replies_[0].balance))
        error_ = "a function answered something other than (code, points, balance)";
      return {};
    }
    // "{c,p,b,c,p,b,...}"
    std::string_view text = PQgetvalue(r, 0, 0);
    if (text.size() < 2 || text.front() != '{' || text.back() != '}') {
      error_ = "apply_frame answered something other than an array";
      return {};
    }
    text = text.substr(1, text.size() - 2);
    size_t i = 0;
    while (!text.empty() && i < 3 * ops_) {
      size_t comma = text.find(',');
      std::string_view item = text.substr(0, comma);
      int64_t* slot = i % 3 == 0   ? &replies_[i / 3].code
                      : i % 3 == 1 ? &replies_[i / 3].points
                                   : &replies_[i / 3].balance;
      if (!parse_i64(item, slot)) break;
      ++i;
      text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    }
    if (i != 3 * ops_ || !text.empty()) error_ = "apply_frame answered the wrong number of results";
    return {};
  }

  PgPtr c_;
  const char* statement_ = nullptr;
  std::vector<std::string> params_;
  size_t ops_ = 0;
  bool inflight_ = false, retry_ = false, got_ = false, write_pending_ = false;
  std::string error_;
  uint64_t retries_ = 0;
  std::vector<OpReply> replies_;
};

// ---------------------------------------------------------------------------------------------

struct RefHash {
  size_t operator()(const Ref128& r) const { return r.lo ^ (r.hi * 0x9e3779b97f4a7c15ULL); }
};

// The plan, generated ahead and extended on demand: the same stream as one call for everything.
// For each reference the plan uses more than once (a duplicate and its original): where.
class Plan {
 public:
  Plan(bench::Choice choice, uint64_t accounts, uint64_t seed)
      : gen_(bench::Mix::kLoyalty, choice, accounts, seed) {}
  void extend(uint64_t count) {
    bench::Plan p = gen_.next(count);
    for (const Event& e : p.events) {
      size_t at = events.size();
      events.push_back(e);
      if (e.kind == EventKind::kBalance) continue;
      auto [it, fresh] = first_use_.try_emplace(e.ref, at);
      if (fresh) continue;
      std::vector<size_t>& where = repeats[e.ref];
      if (where.empty()) where.push_back(it->second);
      where.push_back(at);
    }
  }
  std::vector<Event> events;
  std::unordered_map<Ref128, std::vector<size_t>, RefHash> repeats;  // [ref]: its uses, in order

 private:
  bench::Generator gen_;
  std::unordered_map<Ref128, size_t, RefHash> first_use_;
};

// What the replies must say, checked as they come and once more at the end.
struct Checker {
  std::vector<int8_t> answers;  // [plan index]: the code answered, -1 before
  std::vector<int64_t> delta;   // [account]: what accepted replies did
  uint64_t earns = 0, redeems = 0, duplicates = 0, insufficient = 0, reads = 0;
  uint64_t reuses_answered = 0;  // events the plan made reuse an earlier event's reference
  int64_t issued = 0, redeemed = 0;
  uint64_t mismatches = 0;
  std::string first_mismatch;

  void fail(const std::string& what) {
    if (mismatches++ == 0) first_mismatch = what;
  }

  void check(const Plan& plan, size_t begin, std::span<const OpReply> replies) {
    if (answers.size() < begin + replies.size()) answers.resize(plan.events.size(), -1);
    for (size_t i = 0; i < replies.size(); ++i) {
      const Event& e = plan.events[begin + i];
      const OpReply& r = replies[i];
      answers[begin + i] = static_cast<int8_t>(r.code);
      if (e.kind == EventKind::kBalance) {
        ++reads;
        if (r.code != kOk || r.balance < 0) fail("a balance read answered a code or a negative");
        continue;
      }
      auto uses = plan.repeats.find(e.ref);
      if (uses != plan.repeats.end() && uses->second.front() != begin + i) ++reuses_answered;
      if (r.code == kDuplicate) {
        ++duplicates;
        // Every event sharing its reference that could have won is planned by now.
        if (uses == plan.repeats.end())
          fail("an order ID the plan uses once was answered duplicate");
        continue;
      }
      if (e.kind == EventKind::kEarn) {
        if (r.code != kOk) {
          fail("an earn answered code " + std::to_string(r.code));
          continue;
        }
        if (r.points != e.amount / 100) fail("an earn credited other than floor(amount / 100)");
        ++earns;
        issued += r.points;
        delta[e.account] += r.points;
      } else if (r.code == kInsufficient) {
        ++insufficient;
        if (r.balance >= e.amount) fail("a redeem was rejected with enough points");
      } else if (r.code == kOk) {
        if (r.points != e.amount || r.balance < 0) fail("a redeem debited wrongly or overdrew");
        ++redeems;
        redeemed += r.points;
        delta[e.account] -= r.points;
      } else {
        fail("a redeem answered code " + std::to_string(r.code));
      }
    }
  }

  // Once everything sent (a prefix of the plan) is answered: each reference the plan uses more
  // than once was accepted exactly once, and every other use answered duplicate. So each reuse
  // made exactly one duplicate (itself, or its original when the reuse won the race).
  void finish(const Plan& plan) {
    for (const auto& [ref, where] : plan.repeats) {
      size_t answered = 0, accepted = 0, dups = 0;
      for (size_t at : where) {
        if (at >= answers.size() || answers[at] < 0) continue;
        ++answered;
        accepted += answers[at] == kOk;
        dups += answers[at] == kDuplicate;
      }
      if (answered == 0) continue;
      if (accepted != 1) fail("an order reference accepted " + std::to_string(accepted) + " times");
      if (accepted + dups != answered) fail("a reused order reference not answered duplicate");
    }
    if (duplicates != reuses_answered)
      fail("duplicates rejected (" + std::to_string(duplicates) +
           ") differ from the reuses of an order ID answered (" + std::to_string(reuses_answered) +
           ")");
  }
};

struct Options {
  std::string peer;
  uint16_t port = 0;
  std::string pg_user = "postgres";
  uint32_t connections = 1, pipeline = 1, batch = 1;
  uint64_t accounts = 1'000'000;
  double zipf = 0, warmup = 2, duration = 10;
  uint64_t events = 1'000'000;
  uint64_t seed = 1;
  bool negative_control = false;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "tally-peer-bench: %s (see --help)\n", why.c_str());
  std::exit(2);
}

[[noreturn]] void setup_failed(const Error& e) {
  std::fprintf(stderr, "tally-peer-bench: %s\n", e.message.c_str());
  std::exit(2);
}

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

struct Pending {
  size_t begin, count;
  Clock::time_point sent;
};

struct Conn {
  std::unique_ptr<Channel> ch;
  std::deque<Pending> inflight;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto v = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    auto num = [&](double lo, double hi) {
      std::string s = v();
      char* end = nullptr;
      double d = std::strtod(s.c_str(), &end);
      if (end == s.c_str() || *end != '\0' || d < lo || d > hi)
        usage("bad value for " + a + ": '" + s + "'");
      return d;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--peer") {
      o.peer = v();
    } else if (a == "--port") {
      o.port = static_cast<uint16_t>(num(1, 65535));
    } else if (a == "--pg-user") {
      o.pg_user = v();
    } else if (a == "--connections") {
      o.connections = static_cast<uint32_t>(num(1, 1000));
    } else if (a == "--pipeline") {
      o.pipeline = static_cast<uint32_t>(num(1, 1024));
    } else if (a == "--batch") {
      o.batch = static_cast<uint32_t>(num(1, 100'000));
    } else if (a == "--accounts") {
      o.accounts = static_cast<uint64_t>(num(1, 1e9));
    } else if (a == "--zipf") {
      o.zipf = num(1.000001, 10);
    } else if (a == "--warmup") {
      o.warmup = num(0, 3600);
    } else if (a == "--duration") {
      o.duration = num(0.1, 86400);
    } else if (a == "--events") {
      o.events = static_cast<uint64_t>(num(1, 1e10));
    } else if (a == "--seed") {
      o.seed = static_cast<uint64_t>(num(0, 1e18));
    } else if (a == "--negative-control") {
      o.negative_control = true;
    } else {
      usage("unknown option " + a);
    }
  }
  if (o.peer != "redis" && o.peer != "postgres") usage("--peer redis or --peer postgres");
  if (o.port == 0) usage("--port is required");
  if (o.peer == "postgres" && o.pipeline != 1)
    usage("postgres: one request in flight (--pipeline 1)");
  const bool redis = o.peer == "redis";
  const std::string shape = o.batch == 1 ? "pos" : "batched";

  // The plan first: generation stays out of the timed loop as far as --events reaches.
  Plan plan(o.zipf > 0 ? bench::Choice::kZipf : bench::Choice::kUniform, o.accounts, o.seed);
  plan.extend(o.events);

  std::string durability;
  RedisScripts scripts;
  Clock::time_point setup_start = Clock::now();
  if (Error e = redis ? redis_setup(o.port, o.accounts, &scripts, &durability)
                      : pg_setup(o.port, o.pg_user, o.accounts, &durability))
    setup_failed(e);
  std::printf("tally-peer-bench: %s (%s), %" PRIu64 " members loaded in %.1f s\n", o.peer.c_str(),
              durability.c_str(), o.accounts,
              std::chrono::duration<double>(Clock::now() - setup_start).count());
  std::printf(
      "tally-peer-bench: %s shape, closed loop, %u connection(s) x %u in flight x %u "
      "operation(s), %s, warm-up %.1f s, %.1f s measured\n",
      shape.c_str(), o.connections, o.pipeline, o.batch, o.zipf > 0 ? "zipf 1.01" : "uniform",
      o.warmup, o.duration);
  std::fflush(stdout);

  std::vector<Conn> conns;
  for (uint32_t i = 0; i < o.connections; ++i) {
    Error e;
    std::unique_ptr<Channel> ch =
        redis ? RedisChannel::open(o.port, scripts, &e) : PgChannel::open(o.port, o.pg_user, &e);
    if (!ch) setup_failed(e);
    conns.push_back({std::move(ch), {}});
  }

  Checker checker;
  checker.delta.assign(o.accounts + 1, 0);
  size_t next = 0;
  uint64_t generated_in_run = 0;
  Error failure;
  LogHistogram latency, second_hist;
  uint64_t measured_ops = 0, measured_requests = 0, second_ops = 0;

  const Clock::time_point t0 = Clock::now();
  const Clock::time_point measure_from = t0 + seconds(o.warmup);
  const Clock::time_point end = measure_from + seconds(o.duration);
  // Replies still missing this long after the end fail the run instead of hanging it.
  const Clock::time_point drain_deadline = end + std::chrono::seconds(60);
  Clock::time_point next_progress = t0 + std::chrono::seconds(1);
  bool sending = true;

  auto send_next = [&](Conn& c) {
    if (next + o.batch > plan.events.size()) {
      uint64_t more = std::max<uint64_t>(o.batch, 100'000);
      plan.extend(more);
      generated_in_run += more;
    }
    Pending p{next, o.batch, Clock::now()};
    next += o.batch;
    if (Error e = c.ch->send(std::span(plan.events).subspan(p.begin, p.count))) {
      if (!failure) failure = e;
      sending = false;
      return;
    }
    c.inflight.push_back(p);
  };

  for (Conn& c : conns) {
    for (uint32_t d = 0; d < o.pipeline && sending; ++d) send_next(c);
    if (Error e = c.ch->flush(); e && !failure) failure = e;
  }

  std::vector<pollfd> fds(conns.size());
  while (!failure) {
    Clock::time_point now = Clock::now();
    if (now >= end) sending = false;
    if (now >= drain_deadline) {
      failure = Error{"replies still missing 60 s after the end"};
      break;
    }
    size_t open = 0;
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      bool busy = !c.inflight.empty();
      short events = static_cast<short>((busy ? POLLIN : 0) | (c.ch->wants_write() ? POLLOUT : 0));
      fds[i] = {events ? c.ch->fd() : -1, events, 0};
      open += busy;
    }
    if (open == 0 && !sending) break;
    if (poll(fds.data(), fds.size(), 100) < 0 && errno != EINTR) {
      failure = Error{std::string("poll: ") + std::strerror(errno)};
      break;
    }
    for (size_t i = 0; i < conns.size() && !failure; ++i) {
      Conn& c = conns[i];
      short re = fds[i].revents;
      if (re & POLLOUT)
        if (Error e = c.ch->flush()) failure = e;
      if (!(re & (POLLIN | POLLERR | POLLHUP)) || failure) continue;
      Error e = c.ch->receive([&](std::span<const OpReply> replies) {
        Clock::time_point done = Clock::now();
        Pending p = c.inflight.front();
        c.inflight.pop_front();
        checker.check(plan, p.begin, replies);
        uint64_t ns = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(done - p.sent).count());
        if (p.sent >= measure_from && p.sent < end) {
          latency.record(ns);
          ++measured_requests;
          measured_ops += p.count;
        }
        second_hist.record(ns);
        second_ops += p.count;
        if (sending && done < end) send_next(c);
      });
      if (e) {
        failure = e;
      } else if (c.ch->wants_write()) {
        if (Error f = c.ch->flush()) failure = f;
      }
    }
    now = Clock::now();
    if (now >= next_progress) {
      std::printf("  %5.0f s %10" PRIu64 " ops/s   p50 %8.3f ms   p99 %8.3f ms\n",
                  std::chrono::duration<double>(now - t0).count(), second_ops,
                  static_cast<double>(second_hist.quantile(0.5)) / 1e6,
                  static_cast<double>(second_hist.quantile(0.99)) / 1e6);
      std::fflush(stdout);
      second_hist = LogHistogram{};
      second_ops = 0;
      next_progress += std::chrono::seconds(1);
    }
  }
  uint64_t retries = 0;
  for (const Conn& c : conns) retries += c.ch->retries();
  conns.clear();
  if (!failure) checker.finish(plan);

  // What the peer's data says, against what the replies said.
  uint64_t balance_mismatches = 0;
  int64_t peer_sum = 0;
  const int64_t start_sum = static_cast<int64_t>(o.accounts) * bench::kStartPoints;
  PeerState state;
  bool read_back = false;
  if (!failure) {
    if (Error e = redis ? redis_read_back(o.port, o.accounts, &state)
                        : pg_read_back(o.port, o.pg_user, o.accounts, &state))
      failure = e;
    else
      read_back = true;
  }
  if (read_back) {
    if (o.negative_control) checker.delta[1] += 1;
    for (uint64_t a = 1; a <= o.accounts; ++a) {
      peer_sum += state.balances[a];
      if (state.balances[a] != bench::kStartPoints + checker.delta[a]) ++balance_mismatches;
    }
    if (o.negative_control) checker.issued += 1;
  }
  const uint64_t accepted = checker.earns + checker.redeems;
  const bool sum_ok = read_back && peer_sum == start_sum + checker.issued - checker.redeemed;
  const bool orders_ok = read_back && state.orders == accepted;
  const bool ok =
      !failure && checker.mismatches == 0 && balance_mismatches == 0 && sum_ok && orders_ok;

  auto ms = [&](double q) { return static_cast<double>(latency.quantile(q)) / 1e6; };
  double ops_per_s = static_cast<double>(measured_ops) / o.duration;
  std::printf("\nthroughput   %.0f durable ops/s (%" PRIu64 " requests, %" PRIu64
              " operations in %.1f s)\n",
              ops_per_s, measured_requests, measured_ops, o.duration);
  std::printf("latency      p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms (per request)\n",
              ms(0.5), ms(0.99), ms(0.999), static_cast<double>(latency.max()) / 1e6);
  std::printf("checks       %" PRIu64 " earns and %" PRIu64 " redeems accepted, %" PRIu64
              " duplicates rejected (%" PRIu64 " planned among them), %" PRIu64
              " redeems short of points, %" PRIu64 " reads, %" PRIu64 " retried requests\n",
              checker.earns, checker.redeems, checker.duplicates, checker.reuses_answered,
              checker.insufficient, checker.reads, retries);
  if (read_back) {
    std::printf("totals       issued %" PRId64 ", redeemed %" PRId64 ": members' sum %" PRId64
                ", expected %" PRId64 " (%s); %" PRIu64 " order references claimed, %" PRIu64
                " accepted (%s)\n",
                checker.issued, checker.redeemed, peer_sum,
                start_sum + checker.issued - checker.redeemed, sum_ok ? "match" : "MISMATCH",
                state.orders, accepted, orders_ok ? "match" : "MISMATCH");
    std::printf("balances     %s\n",
                balance_mismatches == 0
                    ? "every member's balance matches the replies"
                    : (std::to_string(balance_mismatches) + " MISMATCHED").c_str());
  }
  if (generated_in_run)
    std::printf("note         %" PRIu64
                " events were generated during the run, beyond --events %" PRIu64 "\n",
                generated_in_run, o.events);
  if (failure) std::printf("error        %s\n", failure.message.c_str());
  if (checker.mismatches)
    std::printf("MISMATCH     %" PRIu64 ": %s\n", checker.mismatches,
                checker.first_mismatch.c_str());
  std::printf(
      "{\"peer_bench\":{\"peer\":\"%s\",\"durability\":\"%s\",\"shape\":\"%s\","
      "\"connections\":%u,\"pipeline\":%u,\"batch\":%u,\"accounts\":%" PRIu64
      ",\"choice\":\"%s\",\"ops_per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
      "\"p999_ms\":%.3f,\"max_ms\":%.3f,\"accepted\":%" PRIu64 ",\"duplicates\":%" PRIu64
      ",\"insufficient\":%" PRIu64 ",\"reads\":%" PRIu64 ",\"retries\":%" PRIu64
      ",\"issued\":%" PRId64 ",\"redeemed\":%" PRId64 ",\"ok\":%s}}\n",
      o.peer.c_str(), durability.c_str(), shape.c_str(), o.connections, o.pipeline, o.batch,
      o.accounts, o.zipf > 0 ? "zipf" : "uniform", ops_per_s, ms(0.5), ms(0.99), ms(0.999),
      static_cast<double>(latency.max()) / 1e6, accepted, checker.duplicates, checker.insufficient,
      checker.reads, retries, checker.issued, checker.redeemed, ok ? "true" : "false");
  return ok ? 0 : 1;
}
