#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "ssm/tensor.h"

namespace ssm {

void* cuda_alloc(size_t bytes);  // src/backend/cuda (or the stub that says CUDA is not built)
void cuda_free(void* p);

namespace {

// Freed CPU blocks of 1 MiB and more are kept (up to 2 GiB in all) and handed out again for the
// same size: a forward or training step allocates the same large tensors every time, and fresh
// pages from the OS cost a page fault and zeroing each (a quarter of a mamba-130m training step
// before this cache). Off under AddressSanitizer, which must see every free.
class BlockCache {
 public:
  void* get(size_t n) {
    if (n >= kMin && enabled()) {
      std::lock_guard<std::mutex> g(m_);
      auto it = free_.find(n);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= n;
        return p;
      }
    }
    return std::aligned_alloc(64, n);
  }
  void put(void* p, size_t n) {
    if (n >= kMin && enabled()) {
      std::lock_guard<std::mutex> g(m_);
      while (cached_ + n > kMax && !free_.empty()) {  // make room: drop the largest blocks first
        auto it = std::prev(free_.end());
        cached_ -= it->first;
        std::free(it->second);
        free_.erase(it);
      }
      if (cached_ + n <= kMax) {
        free_.emplace(n, p);
        cached_ += n;
        return;
      }
    }
    std::free(p);
  }

 private:
  static bool enabled() {
#if defined(__SANITIZE_ADDRESS__)
    return false;
#else
    return true;
#endif
  }
  static constexpr size_t kMin = size_t(1) << 20, kMax = size_t(2) << 30;
  std::mutex m_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

BlockCache& block_cache() {
  static BlockCache* c = new BlockCache;  // never destroyed: storages may be freed during exit
  return *c;
}

class HeapStorage : public Storage {
 public:
  HeapStorage(size_t bytes, Device device, bool zero) {
    bytes_ = bytes;
    device_ = device;
    if (device == Device::cpu) {
      // 64-byte aligned for SIMD; at least one byte so data() is never null.
      size_t n = (bytes + 63) / 64 * 64;
      data_ = block_cache().get(n ? n : 64);
      SSM_CHECK(data_ != nullptr, "tensor", "out of memory allocating " + std::to_string(bytes) + " bytes");
      if (zero) std::memset(data_, 0, n ? n : 64);
    } else {
      data_ = cuda_alloc(bytes);
    }
  }
  ~HeapStorage() override {
    if (device_ == Device::cpu)
      block_cache().put(data_, bytes_ ? (bytes_ + 63) / 64 * 64 : 64);
    else
      cuda_free(data_);
  }
};

class BorrowedStorage : public Storage {
 public:
  BorrowedStorage(void* data, size_t bytes, bool read_only, std::shared_ptr<void> owner) : owner_(std::move(owner)) {
    data_ = data;
    bytes_ = bytes;
    read_only_ = read_only;
  }

 private:
  std::shared_ptr<void> owner_;
};
}  // namespace

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device device, bool zero) {
  return std::make_shared<HeapStorage>(bytes, device, zero);
}

std::shared_ptr<Storage> Storage::borrow(void* data, size_t bytes, bool read_only, std::shared_ptr<void> owner) {
  return std::make_shared<BorrowedStorage>(data, bytes, read_only, std::move(owner));
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("mmap", "cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("mmap", "'" + path + "' is not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("mmap", "cannot map '" + path + "': " + std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace ssm
