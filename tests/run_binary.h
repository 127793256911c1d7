// Tests: run one of the project's binaries as a user would — exact arguments and environment, both
// output streams captured — or start it in the background to signal it. Tests only.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

namespace tally::testing {

struct BinaryRun {
  int status = -1;  // the exit status; -1 if it did not exit normally
  std::string out, err;
};

namespace detail {
struct Argv {
  std::vector<std::string> argv_s, env_s;
  std::vector<char*> argv, envp;
  Argv(const std::string& path, const std::vector<std::string>& args, std::vector<std::string> env) {
    // The sanitizers' settings pass through, so a child built with them reports like the parent.
    for (const char* pass : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"})
      if (const char* v = std::getenv(pass)) env.push_back(std::string(pass) + "=" + v);
    argv_s = {path};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    env_s = std::move(env);
    for (std::string& s : argv_s) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (std::string& s : env_s) envp.push_back(s.data());
    envp.push_back(nullptr);
  }
};
}  // namespace detail

// Runs `path` with exactly these arguments and environment and waits for it.
inline BinaryRun run_binary(const std::string& path, const std::vector<std::string>& args,
                            std::vector<std::string> env) {
  BinaryRun r;
  detail::Argv a(path, args, std::move(env));
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return r;
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]), close(out[1]);
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, path.c_str(), &fa, nullptr, a.argv.data(), a.envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  close(err[1]);
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  for (int open = rc == 0 ? 2 : 0; open > 0;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int k = 0; k < 2; ++k) {
      if (fds[k].fd < 0 || fds[k].revents == 0) continue;
      char buf[4096];
      ssize_t n = read(fds[k].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[k]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[k].fd);
        fds[k].fd = -1;
        --open;
      }
    }
  }
  for (pollfd& p : fds)
    if (p.fd >= 0) close(p.fd);
  if (rc != 0) return r;
  int st = 0;
  if (waitpid(pid, &st, 0) == pid && WIFEXITED(st)) r.status = WEXITSTATUS(st);
  return r;
}

// Starts `path` in the background, its output to /dev/null; the pid, or -1.
inline pid_t start_binary(const std::string& path, const std::vector<std::string>& args, std::vector<std::string> env) {
  detail::Argv a(path, args, std::move(env));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, path.c_str(), &fa, nullptr, a.argv.data(), a.envp.data());
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

}  // namespace tally::testing
