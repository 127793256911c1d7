#include "engine/big_alloc.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>

namespace tally {
namespace {
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kSmall = size_t{1} << 20;  // below this, calloc
size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }
}  // namespace

void* big_alloc(size_t bytes) {
  if (bytes < kSmall) {
    void* p = std::calloc(1, bytes == 0 ? 1 : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  // Over-map by one huge page, then trim both ends so the block starts on a 2 MiB boundary.
  size_t size = round_up(bytes, kHugePage);
  size_t span = size + kHugePage;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  auto base = reinterpret_cast<uintptr_t>(raw);
  uintptr_t start = round_up(base, kHugePage);
  if (start > base) munmap(raw, start - base);
  uintptr_t end = start + size;
  if (base + span > end) munmap(reinterpret_cast<void*>(end), base + span - end);
  void* p = reinterpret_cast<void*>(start);
  madvise(p, size, MADV_HUGEPAGE);  // a hint: without THP the table still works
  return p;
}

void big_free(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes < kSmall) {
    std::free(p);
    return;
  }
  munmap(p, round_up(bytes, kHugePage));
}

}  // namespace tally
