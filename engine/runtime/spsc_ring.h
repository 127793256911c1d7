// Tally runtime: a bounded lock-free single-producer/single-consumer ring.
//
// Exactly one thread pushes and exactly one thread pops. Capacity is a power of two fixed at
// construction; a full ring refuses the push (the caller applies backpressure: it waits, it never
// allocates). Producer and consumer indexes live on separate cache lines, each side caching the
// other's index so that an uncontended push or pop touches no shared line.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>

namespace tally {

constexpr size_t kCacheLineBytes = 64;

template <class T>
class SpscRing {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  explicit SpscRing(size_t capacity_pow2)
      : mask_(capacity_pow2 - 1), slots_(std::make_unique<T[]>(capacity_pow2)) {
    if (capacity_pow2 < 2 || (capacity_pow2 & mask_) != 0) throw std::invalid_argument("ring capacity");
  }

  // Producer: appends up to n items, returns how many fit.
  size_t try_push_n(const T* items, size_t n) {
    uint64_t tail = producer_.tail.load(std::memory_order_relaxed);
    size_t free = capacity() - static_cast<size_t>(tail - producer_.head_cached);
    if (free < n) {
      producer_.head_cached = consumer_.head.load(std::memory_order_acquire);
      free = capacity() - static_cast<size_t>(tail - producer_.head_cached);
    }
    if (n > free) n = free;
    for (size_t i = 0; i < n; ++i) slots_[(tail + i) & mask_] = items[i];
    producer_.tail.store(tail + n, std::memory_order_release);
    return n;
  }
  bool try_push(const T& item) { return try_push_n(&item, 1) == 1; }

  // Consumer: removes up to max items into out, returns how many.
  size_t pop_n(T* out, size_t max) {
    uint64_t head = consumer_.head.load(std::memory_order_relaxed);
    size_t avail = static_cast<size_t>(consumer_.tail_cached - head);
    if (avail == 0) {
      consumer_.tail_cached = producer_.tail.load(std::memory_order_acquire);
      avail = static_cast<size_t>(consumer_.tail_cached - head);
      if (avail == 0) return 0;
    }
    if (max > avail) max = avail;
    for (size_t i = 0; i < max; ++i) out[i] = slots_[(head + i) & mask_];
    consumer_.head.store(head + max, std::memory_order_release);
    return max;
  }

  // Consumer: the oldest item without removing it, or nullptr.
  const T* peek() {
    uint64_t head = consumer_.head.load(std::memory_order_relaxed);
    if (consumer_.tail_cached == head) {
      consumer_.tail_cached = producer_.tail.load(std::memory_order_acquire);
      if (consumer_.tail_cached == head) return nullptr;
    }
    return &slots_[head & mask_];
  }
  void pop_peeked() {
    consumer_.head.store(consumer_.head.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

  // Either side: items in the ring at some recent moment.
  size_t size_approx() const {
    return static_cast<size_t>(producer_.tail.load(std::memory_order_acquire) -
                               consumer_.head.load(std::memory_order_acquire));
  }
  bool empty_approx() const { return size_approx() == 0; }
  size_t capacity() const { return mask_ + 1; }

 private:
  struct alignas(kCacheLineBytes) ProducerSide {
    std::atomic<uint64_t> tail{0};
    uint64_t head_cached = 0;
  };
  struct alignas(kCacheLineBytes) ConsumerSide {
    std::atomic<uint64_t> head{0};
    uint64_t tail_cached = 0;
  };
  ProducerSide producer_;
  ConsumerSide consumer_;
  const size_t mask_;
  std::unique_ptr<T[]> slots_;
};

// Lets a thread that found nothing to do sleep until another thread signals it, without a lock
// and without a system call on the signalling side when nobody sleeps (an "event count").
//   waiter:  auto key = prepare_wait(); if (still nothing to do) wait(key); else cancel_wait();
//   waker:   publish the work; notify();
class alignas(kCacheLineBytes) Waiter {
 public:
  uint32_t prepare_wait() {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return epoch_.load(std::memory_order_seq_cst);
  }
  void cancel_wait() { waiters_.fetch_sub(1, std::memory_order_relaxed); }
  void wait(uint32_t key) {
    epoch_.wait(key, std::memory_order_seq_cst);
    waiters_.fetch_sub(1, std::memory_order_relaxed);
  }
  void notify() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) != 0) {
      epoch_.fetch_add(1, std::memory_order_seq_cst);
      epoch_.notify_all();
    }
  }

 private:
  std::atomic<uint32_t> epoch_{0};
  std::atomic<uint32_t> waiters_{0};
};

// Spin briefly (the other side is usually about to act), then let the caller block.
constexpr int kSpinsBeforeBlocking = 200;
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace tally
