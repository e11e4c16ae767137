package memlock

import (
	"hash/maphash"
	"sync"
)

// Map is a concurrent map whose Update is an atomic read-modify-write on
// one key: the cure for "get, compute, put", which loses updates even on a
// goroutine-safe map because another goroutine can put between the get and
// the put. Only keys in the same shard contend. The zero value is an empty
// Map ready to use; a Map is safe for concurrent use and must not be copied
// after first use.
type Map[K comparable, V any] struct {
	once   sync.Once
	seed   maphash.Seed
	shards [shardCount]mapShard[K, V]
}

type mapShard[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]V
}

func (m *Map[K, V]) shard(key K) *mapShard[K, V] {
	m.once.Do(func() { m.seed = maphash.MakeSeed() })
	return &m.shards[maphash.Comparable(m.seed, key)%shardCount]
}

// Update calls fn with the current value of key (ok false when absent) and
// stores what fn returns; when fn's keep is false the key is deleted. No
// other Update, Load or Delete of a key in the same shard runs meanwhile,
// so fn must be quick and must not call the Map. Update returns the stored
// value.
func (m *Map[K, V]) Update(key K, fn func(old V, ok bool) (v V, keep bool)) V {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.m[key]
	v, keep := fn(old, ok)
	if !keep {
		delete(s.m, key)
		return v
	}
	if s.m == nil {
		s.m = make(map[K]V)
	}
	s.m[key] = v
	return v
}

// Load returns the value of key and whether it is present.
func (m *Map[K, V]) Load(key K) (V, bool) {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok
}

// Delete removes key.
func (m *Map[K, V]) Delete(key K) {
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
}

// Len returns the number of keys.
func (m *Map[K, V]) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
