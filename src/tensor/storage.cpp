#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "ssm/tensor.h"

namespace ssm {

void* cuda_alloc(size_t bytes);  // src/backend/cuda (or the stub that says CUDA is not built)
void cuda_free(void* p);

namespace {
class HeapStorage : public Storage {
 public:
  HeapStorage(size_t bytes, Device device, bool zero) {
    bytes_ = bytes;
    device_ = device;
    if (device == Device::cpu) {
      // 64-byte aligned for SIMD; at least one byte so data() is never null.
      size_t n = (bytes + 63) / 64 * 64;
      data_ = std::aligned_alloc(64, n ? n : 64);
      SSM_CHECK(data_ != nullptr, "tensor", "out of memory allocating " + std::to_string(bytes) + " bytes");
      if (zero) std::memset(data_, 0, n ? n : 64);
    } else {
      data_ = cuda_alloc(bytes);
    }
  }
  ~HeapStorage() override {
    if (device_ == Device::cpu)
      std::free(data_);
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
