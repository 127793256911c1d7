// libtally_fault_shim.so: an LD_PRELOAD shim over every way LMDB writes and syncs its data file,
// for the power-loss and failing-disk tests. It wraps open/open64/openat (to learn which
// descriptors are the data file, and which were opened O_SYNC/O_DSYNC), write, pwrite, pwrite64,
// writev, pwritev, fsync, fdatasync, msync, ftruncate and close.
//
// Environment:
//   TALLY_SHIM_FILE     absolute path of the file to watch (DIR/data.mdb). Nothing else is touched.
//   TALLY_SHIM_JOURNAL  when set: append every write to the file (offset + bytes), every sync,
//                       every truncate, and every write to TALLY_SHIM_ACK_FD, in the order they
//                       happened, so a test can build the file as a power cut at any point would
//                       have left it.
//   TALLY_SHIM_ACK_FD   descriptor whose writes are acknowledgements (journaled as markers).
//   TALLY_SHIM_FAIL     inject a failing disk: "fsync=N" (the Nth and later syncs fail with EIO),
//                       "enospc=N" (the Nth and later writes fail with ENOSPC), "short=N" (the Nth
//                       and later writes write half and return a short count).
//
// Journal records: u8 type ('W' write, 'S' sync, 'T' truncate, 'A' acknowledgement), u8 durable
// (a write through an O_SYNC/O_DSYNC descriptor), u16 0, u32 length, u64 offset (new size for
// 'T'), then `length` bytes ('W': the data; 'A': the acknowledgement text).
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

namespace {

using open_fn = int (*)(const char*, int, ...);
using openat_fn = int (*)(int, const char*, int, ...);
using write_fn = ssize_t (*)(int, const void*, size_t);
using pwrite_fn = ssize_t (*)(int, const void*, size_t, off_t);
using writev_fn = ssize_t (*)(int, const struct iovec*, int);
using pwritev_fn = ssize_t (*)(int, const struct iovec*, int, off_t);
using sync_fn = int (*)(int);
using msync_fn = int (*)(void*, size_t, int);
using ftruncate_fn = int (*)(int, off_t);
using close_fn = int (*)(int);
using lseek_fn = off_t (*)(int, off_t, int);

struct Real {
  open_fn open, open64;
  openat_fn openat, openat64;
  write_fn write;
  pwrite_fn pwrite, pwrite64;
  writev_fn writev;
  pwritev_fn pwritev;
  sync_fn fsync, fdatasync;
  msync_fn msync;
  ftruncate_fn ftruncate;
  close_fn close;
  lseek_fn lseek;
};

Real real;
pthread_once_t once = PTHREAD_ONCE_INIT;
pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

constexpr int kFdMax = 4096;
enum : uint8_t { kUntracked = 0, kTracked = 1, kTrackedSync = 2 };
uint8_t fd_state[kFdMax];

const char* watched = nullptr;
int journal_fd = -1;
int ack_fd = -1;
enum class Fault { kNone, kFsync, kEnospc, kShort } fault = Fault::kNone;
long fault_at = 0;
long syncs = 0, writes = 0;

template <class F>
F sym(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

void init() {
  real.open = sym<open_fn>("open");
  real.open64 = sym<open_fn>("open64");
  real.openat = sym<openat_fn>("openat");
  real.openat64 = sym<openat_fn>("openat64");
  real.write = sym<write_fn>("write");
  real.pwrite = sym<pwrite_fn>("pwrite");
  real.pwrite64 = sym<pwrite_fn>("pwrite64");
  real.writev = sym<writev_fn>("writev");
  real.pwritev = sym<pwritev_fn>("pwritev");
  real.fsync = sym<sync_fn>("fsync");
  real.fdatasync = sym<sync_fn>("fdatasync");
  real.msync = sym<msync_fn>("msync");
  real.ftruncate = sym<ftruncate_fn>("ftruncate");
  real.close = sym<close_fn>("close");
  real.lseek = sym<lseek_fn>("lseek");
  watched = getenv("TALLY_SHIM_FILE");
  if (const char* j = getenv("TALLY_SHIM_JOURNAL"))
    journal_fd = real.open(j, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (const char* a = getenv("TALLY_SHIM_ACK_FD")) ack_fd = atoi(a);
  if (const char* f = getenv("TALLY_SHIM_FAIL")) {
    if (strncmp(f, "fsync=", 6) == 0) fault = Fault::kFsync, fault_at = atol(f + 6);
    else if (strncmp(f, "enospc=", 7) == 0) fault = Fault::kEnospc, fault_at = atol(f + 7);
    else if (strncmp(f, "short=", 6) == 0) fault = Fault::kShort, fault_at = atol(f + 6);
  }
}

void ensure_init() { pthread_once(&once, init); }

bool tracked(int fd) { return fd >= 0 && fd < kFdMax && fd_state[fd] != kUntracked; }

void journal_raw(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = real.write(journal_fd, c, n);
    if (w <= 0) abort();  // a journal that silently misses records would make the test lie
    c += w;
    n -= static_cast<size_t>(w);
  }
}

void journal(char type, bool durable, uint64_t offset, const void* data, uint32_t len) {
  if (journal_fd < 0) return;
  unsigned char head[16] = {};
  head[0] = static_cast<unsigned char>(type);
  head[1] = durable ? 1 : 0;
  memcpy(head + 4, &len, 4);
  memcpy(head + 8, &offset, 8);
  journal_raw(head, sizeof head);
  if (len > 0) journal_raw(data, len);
}

void track_open(int fd, const char* path, int flags) {
  if (fd < 0 || fd >= kFdMax || watched == nullptr || path == nullptr) return;
  if (strcmp(path, watched) != 0) {
    fd_state[fd] = kUntracked;
    return;
  }
  fd_state[fd] = (flags & (O_SYNC | O_DSYNC)) ? kTrackedSync : kTracked;
}

// Decides an injected write fault for the next write to the watched file: 0 none, else errno or
// -1 for a short write. Under mu.
int write_fault() {
  ++writes;
  if (fault == Fault::kEnospc && writes >= fault_at) return ENOSPC;
  if (fault == Fault::kShort && writes >= fault_at) return -1;
  return 0;
}

// One write (of possibly many buffers) to the watched file at `offset`.
ssize_t tracked_write(int fd, const struct iovec* iov, int cnt, off_t offset, bool positioned) {
  pthread_mutex_lock(&mu);
  if (!positioned) offset = real.lseek(fd, 0, SEEK_CUR);
  size_t total = 0;
  for (int i = 0; i < cnt; ++i) total += iov[i].iov_len;
  int f = write_fault();
  ssize_t r;
  if (f > 0) {
    pthread_mutex_unlock(&mu);
    errno = f;
    return -1;
  }
  if (f < 0 && total > 1) {  // short: the first half of the bytes only
    size_t want = total / 2, done = 0;
    for (int i = 0; i < cnt && done < want; ++i) {
      size_t n = iov[i].iov_len < want - done ? iov[i].iov_len : want - done;
      ssize_t w = real.pwrite(fd, iov[i].iov_base, n, offset + static_cast<off_t>(done));
      if (w <= 0) break;
      journal('W', fd_state[fd] == kTrackedSync, static_cast<uint64_t>(offset) + done, iov[i].iov_base,
              static_cast<uint32_t>(w));
      done += static_cast<size_t>(w);
    }
    if (!positioned) real.lseek(fd, offset + static_cast<off_t>(done), SEEK_SET);
    pthread_mutex_unlock(&mu);
    return static_cast<ssize_t>(done);
  }
  r = positioned ? real.pwritev(fd, iov, cnt, offset) : real.writev(fd, iov, cnt);
  if (r > 0) {
    size_t left = static_cast<size_t>(r), at = 0;
    for (int i = 0; i < cnt && left > 0; ++i) {
      size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
      journal('W', fd_state[fd] == kTrackedSync, static_cast<uint64_t>(offset) + at, iov[i].iov_base,
              static_cast<uint32_t>(n));
      at += n;
      left -= n;
    }
  }
  pthread_mutex_unlock(&mu);
  return r;
}

int tracked_sync(int fd, sync_fn fn) {
  pthread_mutex_lock(&mu);
  ++syncs;
  if (fault == Fault::kFsync && syncs >= fault_at) {
    pthread_mutex_unlock(&mu);
    errno = EIO;
    return -1;
  }
  int r = fn(fd);
  if (r == 0) journal('S', false, 0, nullptr, 0);
  pthread_mutex_unlock(&mu);
  return r;
}

void ack_marker(int fd, const void* buf, ssize_t n) {
  if (fd != ack_fd || n <= 0 || journal_fd < 0) return;
  pthread_mutex_lock(&mu);
  journal('A', false, 0, buf, static_cast<uint32_t>(n));
  pthread_mutex_unlock(&mu);
}

}  // namespace

extern "C" {

int open(const char* path, int flags, ...) {
  ensure_init();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  int fd = real.open(path, flags, mode);
  track_open(fd, path, flags);
  return fd;
}

int open64(const char* path, int flags, ...) {
  ensure_init();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  int fd = real.open64(path, flags, mode);
  track_open(fd, path, flags);
  return fd;
}

int openat(int dirfd, const char* path, int flags, ...) {
  ensure_init();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  int fd = real.openat(dirfd, path, flags, mode);
  track_open(fd, path, flags);
  return fd;
}

int openat64(int dirfd, const char* path, int flags, ...) {
  ensure_init();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  int fd = real.openat64(dirfd, path, flags, mode);
  track_open(fd, path, flags);
  return fd;
}

ssize_t write(int fd, const void* buf, size_t n) {
  ensure_init();
  if (tracked(fd)) {
    struct iovec v = {const_cast<void*>(buf), n};
    return tracked_write(fd, &v, 1, 0, false);
  }
  ssize_t r = real.write(fd, buf, n);
  ack_marker(fd, buf, r);
  return r;
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  ensure_init();
  if (!tracked(fd)) return real.pwrite(fd, buf, n, off);
  struct iovec v = {const_cast<void*>(buf), n};
  return tracked_write(fd, &v, 1, off, true);
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) {
  ensure_init();
  if (!tracked(fd)) return real.pwrite64(fd, buf, n, off);
  struct iovec v = {const_cast<void*>(buf), n};
  return tracked_write(fd, &v, 1, off, true);
}

ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  ensure_init();
  if (!tracked(fd)) return real.writev(fd, iov, cnt);
  return tracked_write(fd, iov, cnt, 0, false);
}

ssize_t pwritev(int fd, const struct iovec* iov, int cnt, off_t off) {
  ensure_init();
  if (!tracked(fd)) return real.pwritev(fd, iov, cnt, off);
  return tracked_write(fd, iov, cnt, off, true);
}

int fsync(int fd) {
  ensure_init();
  return tracked(fd) ? tracked_sync(fd, real.fsync) : real.fsync(fd);
}

int fdatasync(int fd) {
  ensure_init();
  return tracked(fd) ? tracked_sync(fd, real.fdatasync) : real.fdatasync(fd);
}

// msync flushes a shared mapping; of the watched file only when LMDB runs with MDB_WRITEMAP (it
// does not here). Counted as a sync of the watched file, which is what it is for that mapping.
int msync(void* addr, size_t len, int flags) {
  ensure_init();
  int r = real.msync(addr, len, flags);
  if (r == 0 && (flags & MS_SYNC) && journal_fd >= 0) {
    pthread_mutex_lock(&mu);
    journal('S', false, 0, nullptr, 0);
    pthread_mutex_unlock(&mu);
  }
  return r;
}

int ftruncate(int fd, off_t len) {
  ensure_init();
  int r = real.ftruncate(fd, len);
  if (r == 0 && tracked(fd)) {
    pthread_mutex_lock(&mu);
    journal('T', false, static_cast<uint64_t>(len), nullptr, 0);
    pthread_mutex_unlock(&mu);
  }
  return r;
}

int close(int fd) {
  ensure_init();
  if (fd >= 0 && fd < kFdMax) fd_state[fd] = kUntracked;
  return real.close(fd);
}

}  // extern "C"
