from cxrgan.data.parallel import ordered_map, worker_pool


def _square(x):
    return x * x


def test_order_is_kept_and_memory_is_bounded():
    pulled = []

    def items():
        for i in range(200):
            pulled.append(i)
            yield i

    out = []
    with worker_pool(2) as pool:
        for y in ordered_map(_square, items(), pool, window=6):
            out.append(y)
            assert len(pulled) - len(out) <= 6  # never more than `window` items in flight
    assert out == [i * i for i in range(200)]


def test_in_process_when_one_worker():
    with worker_pool(1) as pool:
        assert pool is None and list(ordered_map(_square, range(5), pool)) == [0, 1, 4, 9, 16]
