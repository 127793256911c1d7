// Tally engine: zeroed memory for the big pre-sized tables (accounts, orders, the fraud set).
//
// The tables are probed at random over hundreds of MiB to GiBs. With 4 KiB pages nearly every probe
// also misses the TLB; backing them with 2 MiB transparent huge pages (madvise, which Debian's
// default THP mode "madvise" honours) removes most page walks and most first-touch page faults.
// Memory comes from anonymous mmap, so it is zero and costs nothing until touched.
#pragma once

#include <cstddef>
#include <new>

namespace tally {

// Zeroed, 2 MiB aligned when large; throws std::bad_alloc.
void* big_alloc(size_t bytes);
void big_free(void* p, size_t bytes) noexcept;

}  // namespace tally
