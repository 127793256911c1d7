// tallyd as an operator runs it: its configuration file (every error named with its place), its
// command line, SIGTERM under load (nothing acknowledged is lost, exit 0), and a failing disk
// under load (storage_failed to the clients, exit 1, and a restart that has every acknowledged
// event). The server is the real binary in a child process; acknowledgements are recorded here,
// outside it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <mutex>
#include <regex>
#include <thread>

#include "net/client.h"
#include "net/scram.h"
#include "storage/store.h"
#include "tests/run_binary.h"
#include "tests/temp_dir.h"
#include "tools/server_config.h"

using namespace tally;
using namespace tally::net;

namespace {

// A tallyd child process with its stdout and stderr captured.
class Tallyd {
 public:
  Tallyd(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      dup2(out[1], 2);
      close(out[0]);
      std::vector<char*> argv{const_cast<char*>(TALLYD)};
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
      execv(TALLYD, argv.data());
      _exit(127);
    }
    close(out[1]);
    reader_ = std::thread([this, fd = out[0]] {
      char buf[4096];
      for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        std::lock_guard lock(mu_);
        output_.append(buf, static_cast<size_t>(n));
        cv_.notify_all();
      }
      close(fd);
      std::lock_guard lock(mu_);
      eof_ = true;
      cv_.notify_all();
    });
  }
  ~Tallyd() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      wait_exit(10'000);
    }
    if (reader_.joinable()) reader_.join();
  }
  // Waits for the "listening on" line; returns the port (0 if tallyd ended first).
  uint16_t port(int64_t timeout_ms = 60'000) {
    std::unique_lock lock(mu_);
    std::smatch m;
    static const std::regex kListening("listening on [^ ]+:([0-9]+) ");
    cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return eof_ || std::regex_search(output_, m, kListening); });
    if (!std::regex_search(output_, m, kListening)) return 0;
    return static_cast<uint16_t>(std::stoi(m[1]));
  }
  // The exit status (WEXITSTATUS), or -1 if it did not exit in time, -2 if killed by a signal.
  int wait_exit(int64_t timeout_ms) {
    auto f = std::async(std::launch::async, [pid = pid_] {
      int status = 0;
      waitpid(pid, &status, 0);
      return status;
    });
    if (f.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready) {
      kill(pid_, SIGKILL);
      f.wait();
      exited_ = true;
      return -1;
    }
    exited_ = true;
    int status = f.get();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
  }
  void signal(int sig) { kill(pid_, sig); }
  std::string output() {
    if (reader_.joinable() && exited_) reader_.join();
    std::lock_guard lock(mu_);
    return output_;
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;
  bool eof_ = false;
};

// Runs tallyd with `args`, returns (exit status, output).
std::pair<int, std::string> run(const std::vector<std::string>& args) {
  Tallyd t(args);
  int code = t.wait_exit(30'000);
  return {code, t.output()};
}

constexpr const char* kSecret = "demo-pos-secret";  // the embedded default's pos key 1

ClientOptions demo_client(uint16_t port) {
  ClientOptions o;
  o.port = port;
  o.key_id = 1;
  o.secret = kSecret;
  o.attempts = 1;
  return o;
}

// Load from `threads` clients, each enrolling its own members and earning once per member with
// its own order IDs, until told to stop or the server goes away. Records every acknowledged earn.
struct Load {
  std::mutex mu;
  std::vector<std::pair<uint64_t, int64_t>> acked;  // account, points
  std::atomic<uint64_t> acked_count{0};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> storage_failed{0};
  std::condition_variable acked_cv;
  std::vector<std::thread> threads;

  bool wait_acked(uint64_t n, int64_t timeout_ms) {
    std::unique_lock lock(mu);
    return acked_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return acked_count.load() >= n; });
  }

  void start(uint16_t port, int n) {
    for (int t = 0; t < n; ++t)
      threads.emplace_back([this, port, t] {
        Client c(demo_client(port));
        for (uint64_t round = 0; !stop.load(); ++round) {
          std::vector<Event> batch;
          for (uint64_t i = 0; i < 100; ++i) {
            uint64_t account = 1 + (uint64_t{static_cast<uint32_t>(t)} << 32) + round * 100 + i;
            Event en;
            en.kind = EventKind::kEnroll;
            en.program = 1;
            en.account = account;
            en.ref = reference_from_string("enroll-" + std::to_string(account));
            Event earn = en;
            earn.kind = EventKind::kEarn;
            earn.amount = 1000 + static_cast<int64_t>(i) * 100;
            earn.ref = reference_from_string("order-" + std::to_string(account));
            batch.push_back(en);
            batch.push_back(earn);
          }
          std::vector<WireResult> r;
          if (c.submit(batch, &r)) return;  // the server went away: stop
          std::lock_guard lock(mu);
          for (size_t i = 1; i < batch.size(); i += 2) {
            if (r[i].result == Result::kOk) {
              acked.emplace_back(batch[i].account, r[i].points);
              acked_count.fetch_add(1);
            } else if (r[i].result == Result::kStorageFailed) {
              storage_failed.fetch_add(1);
            }
          }
          acked_cv.notify_all();
        }
      });
  }
  void join() {
    stop = true;
    for (auto& t : threads) t.join();
  }
};

// Every acknowledged earn is in the restarted server's balances, exactly once.
void expect_all_present(uint16_t port, const std::vector<std::pair<uint64_t, int64_t>>& acked) {
  Client c(demo_client(port));
  const int64_t bonus = default_program().signup_bonus_points;
  for (size_t i = 0; i < acked.size(); i += 1000) {
    std::vector<Event> reads;
    for (size_t j = i; j < std::min(acked.size(), i + 1000); ++j) {
      Event b;
      b.kind = EventKind::kBalance;
      b.program = 1;
      b.account = acked[j].first;
      reads.push_back(b);
    }
    std::vector<WireResult> r;
    ClientError e = c.submit(reads, &r);
    ASSERT_FALSE(e) << e.message;
    for (size_t j = 0; j < reads.size(); ++j) {
      ASSERT_EQ(r[j].result, Result::kOk) << "acknowledged member " << reads[j].account << " is missing";
      ASSERT_EQ(r[j].available, bonus + acked[i + j].second) << "member " << reads[j].account;
    }
  }
}

}  // namespace

TEST(TallydConfigTest, AFullFileLoads) {
  tally::testing::TempDir dir;
  std::optional<scram::Verifier> v = scram::make_verifier("a-secret-of-mine");
  std::string toml = R"([server]
listen = "127.0.0.1:9000"
workers = 2
backend = "asio"
[storage]
data_dir = "data"
shards = 2
commit_bytes_max = "4MiB"
checkpoint_interval = "64MiB"
history_index = false
[limits]
events_per_frame_max = 1000
connections_max = 50
idle_timeout = "10m"
[[key]]
id = 7
program = 1
role = "operator"
verifier = ")" + scram::encode_verifier(*v) + "\"\n";
  TallydConfig c;
  ConfigError err;
  ASSERT_TRUE(load_tallyd_config_string(toml, "t.toml", dir.path(), &c, &err)) << err.to_string();
  EXPECT_EQ(c.port, 9000);
  EXPECT_EQ(c.workers, 2);
  EXPECT_EQ(c.backend, BackendKind::kAsio);
  EXPECT_EQ(c.data_dir, dir.path() + "/data");
  EXPECT_EQ(c.shards, 2);
  EXPECT_EQ(c.txn_bytes_max, 4u << 20);
  EXPECT_EQ(c.checkpoint_interval_bytes, 64u << 20);
  EXPECT_FALSE(c.history_index);  // on by default
  EXPECT_EQ(c.limits.frame.events_per_frame_max, 1000u);
  EXPECT_EQ(c.limits.connections_max, 50u);
  EXPECT_EQ(c.limits.idle_timeout_ms, 600'000);
  ASSERT_EQ(c.keys.size(), 1u);
  EXPECT_EQ(c.keys[0].role, Role::kOperator);
  EXPECT_EQ(c.keys[0].verifier.stored_key, v->stored_key);
  EXPECT_TRUE(c.demo_secrets.empty());  // no demo keys outside the embedded default
}

TEST(TallydConfigTest, EveryErrorNamesItsPlace) {
  std::string verifier = scram::encode_verifier(*scram::make_verifier("a-secret-of-mine"));
  struct Case {
    std::string toml;
    std::string field;
    std::string says;
  };
  std::vector<Case> cases = {
      {"[server]\nlisen = \"x\"\n", "server.lisen", "unknown key"},
      {"[server]\nlisten = \"localhost\"\n", "server.listen", "HOST:PORT"},
      {"[server]\nbackend = \"epoll\"\n", "server.backend", "io_uring"},
      {"[storage]\nshards = 0\n", "storage.shards", "between 1 and 256"},
      {"[storage]\ncommit_bytes_max = \"4 MB\"\n", "storage.commit_bytes_max", "byte size"},
      {"[limits]\nidle_timeout = 30\n", "limits.idle_timeout", "duration"},
      {"[limits]\nframe_bytes_max = \"64KiB\"\nevents_per_frame_max = 5000\n", "limits.events_per_frame_max", "do not fit"},
      {"[[key]]\nid = 1\nprogram = 1\nrole = \"admin\"\nverifier = \"" + verifier + "\"\n", "key[0].role", "pos"},
      {"[[key]]\nid = 1\nprogram = 1\nrole = \"pos\"\nverifier = \"my-plain-secret\"\n", "key[0].verifier", "never put a secret"},
      {"[[key]]\nid = 1\nprogram = 1\nrole = \"pos\"\n", "key[0].verifier", "missing"},
      {"[[key]]\nid = 1\nprogram = 1\nrole = \"pos\"\nverifier = \"" + verifier + "\"\n[[key]]\nid = 1\nprogram = 1\nrole = \"pos\"\nverifier = \"" + verifier + "\"\n", "key[1].id", "another key"},
      {"[server]\nworkers = 2\nworkers = 3\n", "", "redefin"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.toml);
    TallydConfig out;
    ConfigError err;
    ASSERT_FALSE(load_tallyd_config_string(c.toml, "bad.toml", "/tmp", &out, &err));
    EXPECT_EQ(err.field, c.field) << err.to_string();
    EXPECT_NE(err.to_string().find(c.says), std::string::npos) << err.to_string();
    EXPECT_NE(err.to_string().find("bad.toml:"), std::string::npos);
    if (!c.field.empty()) {
      EXPECT_GT(err.line, 0) << err.to_string();
    }
  }
  // A key for a program that is not defined, and no key at all.
  TallydConfig out;
  ConfigError err;
  EXPECT_FALSE(load_tallyd_config_string("[[key]]\nid = 1\nprogram = 9\nrole = \"pos\"\nverifier = \"" + verifier + "\"\n",
                                         "k.toml", "/tmp", &out, &err));
  EXPECT_NE(err.message.find("program 9"), std::string::npos) << err.to_string();
  EXPECT_FALSE(load_tallyd_config_string("[server]\nworkers = 1\n", "k.toml", "/tmp", &out, &err));
  EXPECT_NE(err.message.find("no [[key]]"), std::string::npos) << err.to_string();
}

TEST(TallydConfigTest, ListenAndByteSizes) {
  std::string host;
  uint16_t port = 0;
  EXPECT_TRUE(parse_listen("[::1]:7411", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 7411);
  EXPECT_FALSE(parse_listen("::1:7411", &host, &port));
  EXPECT_FALSE(parse_listen("127.0.0.1:70000", &host, &port));
  uint64_t b = 0;
  EXPECT_TRUE(parse_bytes("16MiB", &b));
  EXPECT_EQ(b, 16u << 20);
  EXPECT_FALSE(parse_bytes("16MB", &b));
  EXPECT_FALSE(parse_bytes("99999999999999999999GiB", &b));
}

TEST(TallydTest, HelpAndBadOptions) {
  auto [code, out] = run({"--help"});
  EXPECT_EQ(code, 0);
  EXPECT_NE(out.find("--config FILE"), std::string::npos);
  EXPECT_NE(out.find("make-key"), std::string::npos);
  std::tie(code, out) = run({"--shards", "0"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("bad --shards"), std::string::npos) << out;
  std::tie(code, out) = run({"--frobnicate", "1"});
  EXPECT_EQ(code, 2);
  std::tie(code, out) = run({"--config", "/nonexistent/tallyd.toml"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("cannot open"), std::string::npos) << out;
}

TEST(TallydTest, MakeKeyPrintsAVerifierThatTheConfigAccepts) {
  tally::testing::TempDir dir;
  std::string cmd = std::string("echo -n 'chosen-secret-123' | ") + TALLYD + " make-key --id 9 --program 1 --role reader --secret-stdin > " + dir.sub("k.toml");
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  TallydConfig c;
  ConfigError err;
  ASSERT_TRUE(load_tallyd_config_file(dir.sub("k.toml"), &c, &err)) << err.to_string();
  ASSERT_EQ(c.keys.size(), 1u);
  EXPECT_EQ(c.keys[0].id, 9u);
  EXPECT_EQ(c.keys[0].role, Role::kReader);
  std::ifstream in(dir.sub("k.toml"));
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text.find("chosen-secret-123"), std::string::npos) << "the secret must not be written";
}

TEST(TallydTest, SigtermUnderLoadLosesNothingAcknowledged) {
  tally::testing::TempDir dir;
  std::vector<std::pair<uint64_t, int64_t>> acked;
  {
    Tallyd t({"--listen", "127.0.0.1:0", "--data", dir.sub("data"), "--backend", "asio", "--shards", "2"});
    uint16_t port = t.port();
    ASSERT_NE(port, 0) << t.output();
    Load load;
    load.start(port, 4);
    // Stop the server in the middle of the load, once it is well under way.
    EXPECT_TRUE(load.wait_acked(5'000, 60'000));
    ASSERT_GE(load.acked_count.load(), 5'000u);
    t.signal(SIGTERM);
    EXPECT_EQ(t.wait_exit(60'000), 0) << t.output();
    load.join();
    EXPECT_NE(t.output().find("everything acknowledged is durable"), std::string::npos) << t.output();
    acked = load.acked;
  }
  Tallyd again({"--listen", "127.0.0.1:0", "--data", dir.sub("data"), "--backend", "asio", "--shards", "2"});
  uint16_t port = again.port();
  ASSERT_NE(port, 0) << again.output();
  expect_all_present(port, acked);
  again.signal(SIGTERM);
  EXPECT_EQ(again.wait_exit(60'000), 0);
}

#ifdef TALLY_FAULT_SHIM
TEST(TallydTest, AFailingDiskStopsWritesAndExitsWithoutAcknowledgingLoss) {
  tally::testing::TempDir dir;
  std::string data = dir.sub("data");
  std::vector<std::pair<uint64_t, int64_t>> acked;
  uint64_t storage_failed = 0;
  {
    // The 200th sync of the data file and every later one fail with EIO.
    Tallyd t({"--listen", "127.0.0.1:0", "--data", data, "--backend", "asio"},
             {std::string("LD_PRELOAD=") + TALLY_FAULT_SHIM, "TALLY_SHIM_FILE=" + data + "/data.mdb",
              "TALLY_SHIM_FAIL=fsync=200"});
    uint16_t port = t.port();
    ASSERT_NE(port, 0) << t.output();
    Load load;
    load.start(port, 2);
    EXPECT_EQ(t.wait_exit(120'000), 1) << t.output();
    load.join();
    EXPECT_NE(t.output().find("the durable log failed"), std::string::npos) << t.output();
    acked = load.acked;
    storage_failed = load.storage_failed.load();
  }
  EXPECT_GT(acked.size(), 0u);
  EXPECT_GT(storage_failed, 0u) << "waiting requests must be answered storage_failed";
  Tallyd again({"--listen", "127.0.0.1:0", "--data", data, "--backend", "asio"});
  uint16_t port = again.port();
  ASSERT_NE(port, 0) << again.output();
  expect_all_present(port, acked);
  again.signal(SIGTERM);
  EXPECT_EQ(again.wait_exit(60'000), 0);
}
#endif

// A configuration with the demo pos key 1 and a replica key 9 (secret "replica-secret"), for a
// primary and its followers.
static std::string replication_config(const tally::testing::TempDir& dir) {
  std::string path = dir.sub("replication.toml");
  std::ofstream(path) << "[[key]]\nid = 1\nprogram = 1\nrole = \"pos\"\nverifier = \""
                      << scram::encode_verifier(*scram::make_verifier(kSecret)) << "\"\n"
                      << "[[key]]\nid = 9\nprogram = 1\nrole = \"replica\"\nverifier = \""
                      << scram::encode_verifier(*scram::make_verifier("replica-secret")) << "\"\n";
  return path;
}

// The primary and a follower as two tallyd processes; the follower is SIGKILLed again and again
// while the primary takes a load, then started once more: its log is the primary's, batch for
// batch (no gap, no duplicate), and every acknowledged earn reads back from it.
TEST(TallydTest, AFollowerKilledMidStreamResumesWithNoGapOrDuplicate) {
  tally::testing::TempDir dir;
  std::string config = replication_config(dir);
  Tallyd primary({"--config", config, "--listen", "127.0.0.1:0", "--data", dir.sub("primary"), "--backend", "asio",
                  "--shards", "2"});
  uint16_t pport = primary.port();
  ASSERT_NE(pport, 0) << primary.output();
  std::vector<std::string> follower_args = {"--config", config, "--listen", "127.0.0.1:0", "--data", dir.sub("follower"),
                                            "--backend", "asio", "--shards", "2",
                                            "--follow", "127.0.0.1:" + std::to_string(pport), "--follow-key", "9"};
  std::vector<std::string> follower_env = {"TALLY_FOLLOW_SECRET=replica-secret"};
  Load load;
  load.start(pport, 2);
  for (int kill_round = 0; kill_round < 4; ++kill_round) {
    Tallyd follower(follower_args, follower_env);
    uint16_t fport = follower.port();
    ASSERT_NE(fport, 0) << follower.output();
    // Killed once it has caught up with something written since it started.
    uint64_t target = load.acked_count.load() + 1000;
    EXPECT_TRUE(load.wait_acked(target, 60'000));
    Client c(demo_client(fport));
    std::string info;
    for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);;) {
      ASSERT_FALSE(c.info(&info)) << follower.output();
      if (info.find("connected=1") != std::string::npos) break;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << info << follower.output();
    }
    follower.signal(SIGKILL);
    EXPECT_EQ(follower.wait_exit(10'000), -2);
  }
  load.join();
  std::vector<std::pair<uint64_t, int64_t>> acked = load.acked;
  Tallyd follower(follower_args, follower_env);
  uint16_t fport = follower.port();
  ASSERT_NE(fport, 0) << follower.output();
  // Caught up: the follower's durable LSN reaches the primary's.
  Client pc(demo_client(pport)), fc(demo_client(fport));
  std::string pinfo, finfo;
  ASSERT_FALSE(pc.info(&pinfo));
  std::string want = pinfo.substr(pinfo.find("\ndurable_lsn="));
  want = want.substr(0, want.find('\n', 1) + 1);
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);;) {
    ASSERT_FALSE(fc.info(&finfo));
    if (finfo.find(want) != std::string::npos) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << finfo << " wanted " << want << follower.output()
                                                          << "\nprimary:\n" << primary.output();
  }
  expect_all_present(fport, acked);
  std::vector<WireResult> r;
  Event e;
  e.kind = EventKind::kEarn;
  e.program = 1;
  e.account = 1;
  e.amount = 100;
  e.ref = reference_from_string("to-the-follower");
  ASSERT_FALSE(fc.submit(std::span(&e, 1), &r));
  EXPECT_EQ(r[0].result, Result::kNotPrimary);
  follower.signal(SIGTERM);
  EXPECT_EQ(follower.wait_exit(30'000), 0) << follower.output();
  primary.signal(SIGTERM);
  EXPECT_EQ(primary.wait_exit(30'000), 0) << primary.output();
  // Batch for batch the primary's log (the restarts resumed on the hash chain: no gap, no repeat).
  storage::Store ps({.dir = dir.sub("primary"), .read_only = true}), fs({.dir = dir.sub("follower"), .read_only = true});
  ASSERT_EQ(fs.last_lsn(), ps.last_lsn());
  for (uint64_t lsn = 1; lsn <= ps.last_lsn(); ++lsn) ASSERT_EQ(fs.batch(lsn), ps.batch(lsn)) << "LSN " << lsn;
}

// Semi-synchronous failover: the primary acknowledges only what its follower has on disk. Killed
// with SIGKILL at a moment of the load (between commits and acknowledgements among others), the
// follower is promoted and started as the primary: every acknowledged earn is there, exactly once
// (the balance is the sign-up bonus plus the earn's points), and it writes in the next epoch.
TEST(TallydTest, SemiSynchronousFailoverLosesNothingAcknowledged) {
  // Two fixed points and one drawn at random (printed, to replay it with TALLY_FAILOVER_KILL_AFTER).
  uint64_t drawn = 500 + static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) % 7'500;
  if (const char* v = std::getenv("TALLY_FAILOVER_KILL_AFTER")) drawn = std::strtoull(v, nullptr, 10);
  std::printf("failover: killing after 1500, 6000 and %zu acknowledged earns\n", static_cast<size_t>(drawn));
  for (uint64_t kill_after : {uint64_t{1'500}, uint64_t{6'000}, drawn}) {
    tally::testing::TempDir dir;
    std::string config = replication_config(dir);
    Tallyd primary({"--config", config, "--listen", "127.0.0.1:0", "--data", dir.sub("primary"), "--backend", "asio",
                    "--shards", "2", "--sync-followers", "1"});
    uint16_t pport = primary.port();
    ASSERT_NE(pport, 0) << primary.output();
    Tallyd follower({"--config", config, "--listen", "127.0.0.1:0", "--data", dir.sub("follower"), "--backend", "asio",
                     "--shards", "2", "--follow", "127.0.0.1:" + std::to_string(pport), "--follow-key", "9"},
                    {"TALLY_FOLLOW_SECRET=replica-secret"});
    ASSERT_NE(follower.port(), 0) << follower.output();
    Load load;
    load.start(pport, 3);
    ASSERT_TRUE(load.wait_acked(kill_after, 60'000)) << primary.output();
    primary.signal(SIGKILL);
    EXPECT_EQ(primary.wait_exit(10'000), -2);
    load.join();
    std::vector<std::pair<uint64_t, int64_t>> acked = load.acked;
    follower.signal(SIGTERM);
    EXPECT_EQ(follower.wait_exit(30'000), 0) << follower.output();

    // Promotion: refused while behind what the primary had reached, unless forced.
    tally::testing::BinaryRun p = tally::testing::run_binary(TALLY_ADMIN, {"promote", dir.sub("follower")}, {});
    if (p.status != 0) {
      EXPECT_NE(p.out.find("REFUSED"), std::string::npos) << p.out;
      p = tally::testing::run_binary(TALLY_ADMIN, {"promote", dir.sub("follower"), "--force"}, {});
    }
    ASSERT_EQ(p.status, 0) << p.out << p.err;
    EXPECT_NE(p.out.find("epoch 1 -> 2"), std::string::npos) << p.out;

    Tallyd promoted({"--config", config, "--listen", "127.0.0.1:0", "--data", dir.sub("follower"), "--backend", "asio",
                     "--shards", "2"});
    uint16_t port = promoted.port();
    ASSERT_NE(port, 0) << promoted.output();
    expect_all_present(port, acked);
    Client c(demo_client(port));
    Event e;
    e.kind = EventKind::kEnroll;
    e.program = 1;
    e.account = 999'999'999;
    e.ref = reference_from_string("after-failover");
    std::vector<WireResult> r;
    ASSERT_FALSE(c.submit(std::span(&e, 1), &r));
    EXPECT_EQ(r[0].result, Result::kOk);
    std::string info;
    ASSERT_FALSE(c.info(&info));
    EXPECT_NE(info.find("role=primary\nepoch=2\n"), std::string::npos) << info;
    promoted.signal(SIGTERM);
    EXPECT_EQ(promoted.wait_exit(30'000), 0) << promoted.output();
    std::printf("killed after %zu acknowledged earns; all present on the promoted follower\n", acked.size());
  }
}
