# Make the test disks: a.img/b.img (64 MiB, every u64 word = its byte offset, b.img with the
# top 16 bits set) and pat.bin (1 MiB of write data). The Rust tests build the same bytes.
import struct, sys
d, share = sys.argv[1], sys.argv[2]
def img(name, xor):
    with open(name, 'wb') as f:
        for base in range(0, 64 << 20, 1 << 20):
            f.write(b''.join(struct.pack('<Q', (base + i) ^ xor) for i in range(0, 1 << 20, 8)))
img(d + '/a.img', 0)
img(d + '/b.img', 0xFFFF000000000000)
with open(share + '/pat.bin', 'wb') as f:
    f.write(bytes(((i // 512) * 31 + i * 7) % 251 for i in range(1 << 20)))
