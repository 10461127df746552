// A bounded pool of torch's large CPU blocks, reused by size across forward passes (see tensor_pool.py for why).
//
// Blocks of at least `min_bytes` come from the allocator that was in place (torch's default) and, when freed, wait
// in a free list keyed by their exact size; the next request of that size takes one back instead of mapping fresh
// memory that the kernel must zero. Free blocks beyond `cap_bytes` in all are released, oldest first, so the pool
// holds at most the model's working set plus `cap_bytes`. Smaller blocks keep the previous allocator's own deleter.
// Every pointer handed out is its own context, as raw_allocate/raw_deleter (oneDNN's path) require.
#include <torch/extension.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

struct Block {
  at::DataPtr owner;  // the previous allocator's block: destroying it frees the memory
  size_t size;
};

class TensorPool final : public at::Allocator {
 public:
  TensorPool(at::Allocator* base, size_t min_bytes, size_t cap_bytes)
      : base_(base), min_bytes_(min_bytes), cap_bytes_(cap_bytes) {}

  at::DataPtr allocate(size_t n) override {
    if (n < min_bytes_) {
      return base_->allocate(n);
    }
    Block* block = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = free_.find(n);
      if (found != free_.end() && !found->second.empty()) {
        block = found->second.back();
        found->second.pop_back();
        oldest_.remove(block);
        cached_ -= n;
        ++hits_;
      } else {
        ++misses_;
      }
    }
    if (block == nullptr) {
      block = new Block{base_->allocate(n), n};
      std::lock_guard<std::mutex> lock(mutex_);
      owned_[block->owner.get()] = block;
    }
    void* data = block->owner.get();
    return at::DataPtr(data, data, &TensorPool::release, at::Device(at::DeviceType::CPU));
  }

  at::DeleterFnPtr raw_deleter() const override { return &TensorPool::release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  std::vector<int64_t> stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(cached_), static_cast<int64_t>(hits_), static_cast<int64_t>(misses_),
            static_cast<int64_t>(evictions_), static_cast<int64_t>(cap_bytes_)};
  }

  static TensorPool* instance;

 private:
  static void release(void* data) {
    if (data != nullptr) {
      instance->give_back(data);
    }
  }

  void give_back(void* data) {
    std::vector<Block*> evicted;
    bool pooled = true;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = owned_.find(data);
      pooled = found != owned_.end();
      if (pooled) {
        Block* block = found->second;
        free_[block->size].push_back(block);
        oldest_.push_back(block);
        cached_ += block->size;
      }
      while (cached_ > cap_bytes_ && !oldest_.empty()) {
        Block* old = oldest_.front();
        oldest_.pop_front();
        auto& same = free_[old->size];
        same.erase(std::find(same.begin(), same.end(), old));
        cached_ -= old->size;
        owned_.erase(old->owner.get());
        ++evictions_;
        evicted.push_back(old);
      }
    }
    if (!pooled) {  // a small block raw-allocated through the pool: the previous allocator's own
      base_->raw_deleter()(data);
    }
    for (Block* old : evicted) {
      delete old;  // outside the lock: unmapping takes time
    }
  }

  at::Allocator* base_;
  size_t min_bytes_, cap_bytes_;
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<Block*>> free_;
  std::list<Block*> oldest_;
  std::unordered_map<void*, Block*> owned_;
  size_t cached_ = 0, hits_ = 0, misses_ = 0, evictions_ = 0;
};

TensorPool* TensorPool::instance = nullptr;

bool install(int64_t min_bytes, int64_t cap_bytes) {
  if (TensorPool::instance == nullptr) {
    // never deleted: blocks may be freed until the very end of the process
    TensorPool::instance = new TensorPool(c10::GetCPUAllocator(), static_cast<size_t>(min_bytes),
                                          static_cast<size_t>(cap_bytes));
    c10::SetCPUAllocator(TensorPool::instance, /*priority=*/100);
  }
  return c10::GetCPUAllocator() == TensorPool::instance;
}

std::vector<int64_t> stats() {
  return TensorPool::instance == nullptr ? std::vector<int64_t>{} : TensorPool::instance->stats();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("install", &install, "Make the pool torch's CPU allocator; true when it is.");
  module.def("stats", &stats, "cached bytes, hits, misses, evictions, cap bytes");
}
