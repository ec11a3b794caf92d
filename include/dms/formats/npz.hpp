// dms/formats/npz.hpp: NumPy .npz archives (zip files of .npy arrays): read, and write.
//
// Gemma Scope ships its SAEs as params.npz (W_enc, W_dec, b_enc, b_dec, threshold). np.savez
// stores entries uncompressed, np.savez_compressed deflates them, and both write zip64 extra
// fields into every local header (numpy passes force_zip64=True), so a reader must handle all
// three. This one reads the archive the way a careful unzip does:
//  * the end-of-central-directory record is found by scanning back over at most a 64 KiB comment,
//    and its comment length must reach exactly the end of the file; zip64 records are followed
//    when the locator is present; multi-disk archives are refused;
//  * every central-directory record and local header is bounds-checked, the local header must
//    name the same file with the same method, and entries may not overlap one another or the
//    central directory (overlapping entries are how "better zip bombs" multiply their output);
//  * only stored and deflate entries are read, never encrypted ones; deflate streams are inflated
//    with zlib (raw, windowBits -15) into a buffer of the declared size, which must be plausible
//    (deflate cannot expand data more than 1032:1, and `max_entry_bytes` caps it) and must be
//    produced exactly: a stream that yields more or fewer bytes, or leaves input behind, is an
//    error, and the CRC-32 of the result must match the directory's.
// Array names are the entry names without ".npy", as np.load's NpzFile.files gives them.
// Errors name the archive, the byte offset of the record at fault and the entry.
//
// npz_writer writes what np.savez (stored) or np.savez_compressed (deflate) would, with a fixed
// timestamp (1980-01-01) so that the same arrays always give the same bytes; zip64 records are
// used where sizes or offsets need them (or always, on request, to exercise readers).
#pragma once

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <zlib.h>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/atomic_file.hpp"
#include "dms/formats/mapped_file.hpp"
#include "dms/formats/npy.hpp"

DMS_NAMESPACE_BEGIN

//! Limits applied while reading an archive.
struct npz_options {
  //! Largest uncompressed entry accepted: a declared size above it is refused before anything is
  //! allocated. 64 GiB is larger than any SAE or probe dms reads; lower it for untrusted input.
  std::uint64_t max_entry_bytes = std::uint64_t{1} << 36;
};

//! One file of a zip archive, as its central directory and local header describe it.
struct zip_entry {
  std::string name;         //!< "W_enc.npy"
  std::uint16_t method = 0; //!< 0 stored, 8 deflate
  std::uint16_t flags = 0;  //!< general-purpose bit flags
  std::uint32_t crc32 = 0;  //!< CRC-32 of the uncompressed bytes
  std::uint64_t compressed_size = 0;
  std::uint64_t uncompressed_size = 0;
  std::uint64_t local_header_offset = 0;
  std::uint64_t data_offset = 0;    //!< first byte of the (compressed) data
  std::uint64_t central_offset = 0; //!< offset of this entry's central-directory record
};

namespace detail {

inline constexpr std::uint32_t zip_local_sig = 0x04034b50;
inline constexpr std::uint32_t zip_central_sig = 0x02014b50;
inline constexpr std::uint32_t zip_eocd_sig = 0x06054b50;
inline constexpr std::uint32_t zip64_eocd_sig = 0x06064b50;
inline constexpr std::uint32_t zip64_locator_sig = 0x07064b50;
//! deflate's maximum expansion: one 258-byte match per ~2 bits of input gives at most 1032:1
//! (zlib's technical notes). A declared size beyond it is a lie, whatever the stream contains.
inline constexpr std::uint64_t deflate_max_ratio = 1032;

inline std::uint32_t crc32_of(std::span<const std::byte> bytes) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto *p = reinterpret_cast<const Bytef *>(bytes.data());
  std::size_t left = bytes.size();
  while (left > 0) { // zlib's length is a uInt: feed at most 1 GiB at a time
    const auto n = static_cast<uInt>(std::min<std::size_t>(left, std::size_t{1} << 30));
    crc = ::crc32(crc, p, n);
    p += n;
    left -= n;
  }
  return static_cast<std::uint32_t>(crc);
}

} // namespace detail

//! A validated .npz (zip) archive: mapped from disk, or borrowed from a byte span.
class npz_file {
public:
  explicit npz_file(std::string path, npz_options options = {}) : file_(std::move(path)), options_(options) {
    bytes_ = file_.bytes();
    name_ = file_.path();
    parse();
  }
  //! Parses `bytes` (not copied: they must outlive this object); `name` labels errors.
  npz_file(std::span<const std::byte> bytes, std::string name, npz_options options = {})
      : name_(std::move(name)), bytes_(bytes), options_(options) {
    parse();
  }

  const std::string &path() const noexcept { return name_; }
  //! Every entry, in central-directory order.
  std::span<const zip_entry> entries() const noexcept { return entries_; }
  //! Array names (entry names without ".npy"), in archive order.
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto &e : entries_)
      v.push_back(array_name(e.name));
    return v;
  }
  bool contains(std::string_view array) const { return find(array) != nullptr; }
  //! The entry of `array` ("W_enc" finds "W_enc.npy"; an exact entry name works too), or nullptr.
  const zip_entry *find(std::string_view array) const {
    for (const std::string &candidate : {std::string(array) + ".npy", std::string(array)}) {
      auto it = index_.find(candidate);
      if (it != index_.end()) return &entries_[it->second];
    }
    return nullptr;
  }
  const zip_entry &entry(std::string_view array) const {
    const zip_entry *e = find(array);
    require(e != nullptr, errc::invalid_argument,
            [&] { return "no array named '" + std::string(array) + "' in the archive"; }, {name_});
    return *e;
  }

  //! The uncompressed bytes of `e`, CRC-checked.
  std::vector<std::byte> read_entry(const zip_entry &e) const {
    const error_context where{name_, e.data_offset, e.name};
    const auto src =
        bytes_.subspan(static_cast<std::size_t>(e.data_offset), static_cast<std::size_t>(e.compressed_size));
    std::vector<std::byte> out;
    if (e.method == 0) {
      out.assign(src.begin(), src.end());
    } else {
      out.resize(static_cast<std::size_t>(e.uncompressed_size));
      inflate_raw(src, out, where);
    }
    const std::uint32_t crc = detail::crc32_of(out);
    require(
        crc == e.crc32, errc::invalid_format,
        [&] {
          return "CRC-32 of the uncompressed data is " + hex(crc) + ", the directory says " + hex(e.crc32);
        },
        where);
    return out;
  }
  //! The array `array`, parsed as .npy and converted to f32.
  npy_array read(std::string_view array) const {
    const zip_entry &e = entry(array);
    const std::vector<std::byte> bytes = read_entry(e);
    // Offsets inside the array are relative to the entry's uncompressed bytes.
    return parse_npy(bytes, name_ + "[" + e.name + "]");
  }

  static std::string array_name(std::string_view entry_name) {
    return std::string(entry_name.ends_with(".npy") ? entry_name.substr(0, entry_name.size() - 4)
                                                    : entry_name);
  }

private:
  static std::string hex(std::uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
  }

  static void inflate_raw(std::span<const std::byte> src, std::span<std::byte> dst,
                          const error_context &where) {
    z_stream zs{};
    require(
        inflateInit2(&zs, -15) == Z_OK, errc::io, [] { return std::string("zlib inflateInit2 failed"); },
        where);
    struct guard {
      z_stream *z;
      ~guard() { inflateEnd(z); }
    } g{&zs};
    std::size_t in_pos = 0, out_pos = 0;
    constexpr std::size_t chunk = std::size_t{1} << 30; // zlib counts in uInt
    // Once the declared size is full, inflate keeps running into a 1-byte probe: the stream must
    // end without writing to it.
    Bytef probe[1];
    bool full = false;
    while (true) {
      if (zs.avail_in == 0 && in_pos < src.size()) {
        const std::size_t n = std::min(chunk, src.size() - in_pos);
        zs.next_in = reinterpret_cast<Bytef *>(const_cast<std::byte *>(src.data() + in_pos));
        zs.avail_in = static_cast<uInt>(n);
        in_pos += n;
      }
      if (zs.avail_out == 0 && !full) {
        if (out_pos < dst.size()) {
          const std::size_t n = std::min(chunk, dst.size() - out_pos);
          zs.next_out = reinterpret_cast<Bytef *>(dst.data() + out_pos);
          zs.avail_out = static_cast<uInt>(n);
          out_pos += n;
        } else {
          full = true;
        }
      }
      if (full) {
        zs.next_out = probe;
        zs.avail_out = 1;
      }
      const uInt before_in = zs.avail_in, before_out = zs.avail_out;
      const int rc = inflate(&zs, Z_NO_FLUSH);
      require(
          !full || zs.avail_out == 1, errc::invalid_format,
          [&] {
            return "deflate stream inflates to more than the declared " + std::to_string(dst.size()) +
                   " bytes";
          },
          where);
      if (rc == Z_STREAM_END) break;
      require(
          rc == Z_OK || rc == Z_BUF_ERROR, errc::invalid_format,
          [&] {
            return "corrupt deflate stream: " +
                   std::string(zs.msg ? zs.msg : "zlib error " + std::to_string(rc));
          },
          where);
      const bool progress = zs.avail_in != before_in || zs.avail_out != before_out;
      require(
          progress || (zs.avail_in == 0 && in_pos < src.size()), errc::invalid_format,
          [] {
            return std::string("deflate stream is truncated (input ended before the end-of-stream block)");
          },
          where);
    }
    const std::uint64_t produced = zs.total_out;
    require(
        produced == dst.size(), errc::invalid_format,
        [&] {
          return "deflate stream inflates to " + std::to_string(produced) +
                 " bytes, the directory declares " + std::to_string(dst.size());
        },
        where);
    const std::uint64_t left = zs.avail_in + (src.size() - in_pos);
    require(
        left == 0, errc::invalid_format,
        [&] { return std::to_string(left) + " bytes follow the end of the deflate stream (expected none)"; },
        where);
  }

  void parse() {
    const std::size_t size = bytes_.size();
    // --- end of central directory ---
    require(size >= 22, errc::invalid_format,
            [&] {
              return "file of " + std::to_string(size) +
                     " bytes is too small for a zip archive (expected >= 22)";
            },
            {name_, 0});
    std::size_t eocd = SIZE_MAX;
    const std::size_t lowest = size - 22 > 65535 ? size - 22 - 65535 : 0;
    for (std::size_t pos = size - 22 + 1; pos-- > lowest;) {
      std::uint32_t sig;
      std::uint16_t comment_len;
      std::memcpy(&sig, bytes_.data() + pos, 4);
      if (sig != detail::zip_eocd_sig) continue;
      std::memcpy(&comment_len, bytes_.data() + pos + 20, 2);
      if (comment_len == size - pos - 22) { // a signature inside the comment does not count
        eocd = pos;
        break;
      }
    }
    require(
        eocd != SIZE_MAX, errc::invalid_format,
        [] { return std::string("no end-of-central-directory record (expected a zip archive; truncated?)"); },
        {name_, size});
    byte_cursor e(bytes_.subspan(eocd + 4), name_, eocd + 4);
    std::uint64_t disk = e.read<std::uint16_t>("disk number");
    std::uint64_t cd_disk = e.read<std::uint16_t>("central directory disk");
    std::uint64_t count_disk = e.read<std::uint16_t>("entries on this disk");
    std::uint64_t count = e.read<std::uint16_t>("entry count");
    std::uint64_t cd_size = e.read<std::uint32_t>("central directory size");
    std::uint64_t cd_offset = e.read<std::uint32_t>("central directory offset");
    std::uint64_t cd_limit = eocd; // the central directory ends before this

    // --- zip64: a locator right before the EOCD points to the zip64 EOCD record ---
    if (eocd >= 20) {
      byte_cursor l(bytes_.subspan(eocd - 20), name_, eocd - 20);
      if (l.read<std::uint32_t>("signature") == detail::zip64_locator_sig) {
        const std::uint64_t locator_disk = l.read<std::uint32_t>("zip64 EOCD disk");
        const auto z64 = l.read<std::uint64_t>("zip64 EOCD offset");
        const std::uint64_t disks = l.read<std::uint32_t>("disk count");
        require(locator_disk == 0 && disks <= 1, errc::unsupported,
                [] { return std::string("multi-disk zip archives are not supported"); }, {name_, eocd - 20});
        require(z64 <= eocd - 20 && eocd - 20 - z64 >= 56, errc::invalid_format,
                [&] {
                  return "zip64 end-of-central-directory offset " + std::to_string(z64) +
                         " is out of range (expected <= " + std::to_string(eocd - 20 >= 56 ? eocd - 76 : 0) +
                         ")";
                },
                {name_, eocd - 12});
        byte_cursor z(bytes_.subspan(static_cast<std::size_t>(z64)), name_, z64);
        require(
            z.read<std::uint32_t>("zip64 EOCD signature") == detail::zip64_eocd_sig, errc::invalid_format,
            [] { return std::string("bad zip64 end-of-central-directory signature (expected PK\\6\\6)"); },
            {name_, z64});
        z.skip(8 + 2 + 2, "zip64 EOCD size and versions");
        disk = z.read<std::uint32_t>("disk number");
        cd_disk = z.read<std::uint32_t>("central directory disk");
        count_disk = z.read<std::uint64_t>("entries on this disk");
        count = z.read<std::uint64_t>("entry count");
        cd_size = z.read<std::uint64_t>("central directory size");
        cd_offset = z.read<std::uint64_t>("central directory offset");
        cd_limit = z64;
      }
    }
    require(disk == 0 && cd_disk == 0 && count_disk == count, errc::unsupported,
            [] {
              return std::string(
                  "multi-disk zip archives are not supported (expected disk 0 holding every entry)");
            },
            {name_, eocd});
    require(cd_offset <= cd_limit && cd_size <= cd_limit - cd_offset, errc::invalid_format,
            [&] {
              return "central directory [" + std::to_string(cd_offset) + ", +" + std::to_string(cd_size) +
                     ") runs past its end record at " + std::to_string(cd_limit);
            },
            {name_, eocd});
    // Each record takes at least 46 bytes: this bounds the count before anything is reserved.
    require(count <= cd_size / 46, errc::invalid_format,
            [&] {
              return std::to_string(count) + " entries cannot fit in a central directory of " +
                     std::to_string(cd_size) + " bytes";
            },
            {name_, eocd});

    // --- central directory ---
    byte_cursor c(bytes_.subspan(static_cast<std::size_t>(cd_offset), static_cast<std::size_t>(cd_size)),
                  name_, static_cast<std::size_t>(cd_offset));
    entries_.reserve(static_cast<std::size_t>(count));
    for (std::uint64_t i = 0; i < count; ++i)
      entries_.push_back(parse_central(c));
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const bool fresh = index_.emplace(entries_[i].name, i).second;
      require(fresh, errc::invalid_format, [] { return std::string("duplicate entry name"); },
              {name_, entries_[i].central_offset, entries_[i].name});
    }
    for (auto &entry : entries_)
      resolve_local(entry, cd_offset);
    check_overlaps();
  }

  zip_entry parse_central(byte_cursor &c) const {
    zip_entry e;
    e.central_offset = c.file_offset();
    require(c.read<std::uint32_t>("central directory signature") == detail::zip_central_sig,
            errc::invalid_format,
            [] { return std::string("bad central directory signature (expected PK\\1\\2)"); },
            {name_, e.central_offset});
    c.skip(4, "versions");
    e.flags = c.read<std::uint16_t>("flags");
    e.method = c.read<std::uint16_t>("compression method");
    c.skip(4, "time and date");
    e.crc32 = c.read<std::uint32_t>("CRC-32");
    e.compressed_size = c.read<std::uint32_t>("compressed size");
    e.uncompressed_size = c.read<std::uint32_t>("uncompressed size");
    const auto name_len = c.read<std::uint16_t>("name length");
    const auto extra_len = c.read<std::uint16_t>("extra length");
    const auto comment_len = c.read<std::uint16_t>("comment length");
    std::uint64_t disk = c.read<std::uint16_t>("disk number");
    c.skip(6, "attributes");
    e.local_header_offset = c.read<std::uint32_t>("local header offset");
    e.name = std::string(c.read_chars(name_len, "entry name"));
    const std::uint64_t extra_at = c.file_offset();
    const auto extra = c.read_bytes(extra_len, "extra field");
    c.skip(comment_len, "entry comment");

    const error_context where{name_, e.central_offset, e.name};
    require(
        !e.name.empty() && is_valid_utf8(e.name), errc::invalid_format,
        [] { return std::string("entry name is empty or not valid UTF-8"); }, where);
    // zip64 extended information (header id 1): the 64-bit values of exactly those fields that
    // are saturated in the record, in this order.
    byte_cursor x(extra, name_, static_cast<std::size_t>(extra_at));
    while (x.remaining() >= 4) {
      const auto id = x.read<std::uint16_t>("extra field id");
      const auto len = x.read<std::uint16_t>("extra field size");
      byte_cursor f(x.read_bytes(len, "extra field data"), name_,
                    static_cast<std::size_t>(x.file_offset() - len));
      if (id != 1) continue;
      if (e.uncompressed_size == 0xffffffffu)
        e.uncompressed_size = f.read<std::uint64_t>("zip64 uncompressed size");
      if (e.compressed_size == 0xffffffffu)
        e.compressed_size = f.read<std::uint64_t>("zip64 compressed size");
      if (e.local_header_offset == 0xffffffffu)
        e.local_header_offset = f.read<std::uint64_t>("zip64 local header offset");
      if (disk == 0xffffu) disk = f.read<std::uint32_t>("zip64 disk number");
    }
    require(
        disk == 0, errc::unsupported, [] { return std::string("multi-disk zip archives are not supported"); },
        where);
    require((e.flags & 0x41u) == 0, errc::unsupported,
            [] { return std::string("encrypted entries are not supported"); }, where);
    require(
        e.method == 0 || e.method == 8, errc::unsupported,
        [&] {
          return "compression method " + std::to_string(e.method) + " (expected 0, stored, or 8, deflate)";
        },
        where);
    require(
        e.uncompressed_size <= options_.max_entry_bytes, errc::invalid_format,
        [&] {
          return "declared uncompressed size " + std::to_string(e.uncompressed_size) +
                 " exceeds the limit of " + std::to_string(options_.max_entry_bytes) + " bytes";
        },
        where);
    if (e.method == 0) {
      require(
          e.compressed_size == e.uncompressed_size, errc::invalid_format,
          [&] {
            return "stored entry with compressed size " + std::to_string(e.compressed_size) +
                   " != uncompressed size " + std::to_string(e.uncompressed_size);
          },
          where);
    } else {
      require(
          e.uncompressed_size / detail::deflate_max_ratio <= e.compressed_size, errc::invalid_format,
          [&] {
            return "declared uncompressed size " + std::to_string(e.uncompressed_size) + " is more than " +
                   std::to_string(detail::deflate_max_ratio) + " times the compressed size " +
                   std::to_string(e.compressed_size) + " (impossible for deflate)";
          },
          where);
    }
    return e;
  }

  void resolve_local(zip_entry &e, std::uint64_t cd_offset) const {
    const error_context where{name_, e.local_header_offset, e.name};
    require(e.local_header_offset < cd_offset, errc::invalid_format,
            [&] {
              return "local header offset " + std::to_string(e.local_header_offset) +
                     " is not before the central directory at " + std::to_string(cd_offset);
            },
            {name_, e.central_offset, e.name});
    byte_cursor l(bytes_.first(static_cast<std::size_t>(cd_offset))
                      .subspan(static_cast<std::size_t>(e.local_header_offset)),
                  name_, static_cast<std::size_t>(e.local_header_offset));
    require(
        l.read<std::uint32_t>("local header signature") == detail::zip_local_sig, errc::invalid_format,
        [] { return std::string("bad local header signature (expected PK\\3\\4)"); }, where);
    l.skip(4, "version and flags");
    const auto method = l.read<std::uint16_t>("compression method");
    l.skip(16, "time, date, CRC-32 and sizes");
    const auto name_len = l.read<std::uint16_t>("name length");
    const auto extra_len = l.read<std::uint16_t>("extra length");
    const std::string_view local_name = l.read_chars(name_len, "entry name");
    l.skip(extra_len, "extra field");
    require(
        local_name == e.name && method == e.method, errc::invalid_format,
        [&] {
          return "local header says '" + std::string(local_name) + "' (method " + std::to_string(method) +
                 "), the central directory '" + e.name + "' (method " + std::to_string(e.method) + ")";
        },
        where);
    e.data_offset = l.file_offset();
    require(
        e.compressed_size <= cd_offset - e.data_offset, errc::invalid_format,
        [&] {
          return "data [" + std::to_string(e.data_offset) + ", +" + std::to_string(e.compressed_size) +
                 ") runs into the central directory at " + std::to_string(cd_offset);
        },
        where);
  }

  //! Entries (local header + data) must be disjoint.
  void check_overlaps() const {
    std::vector<const zip_entry *> by_offset;
    for (const auto &e : entries_)
      by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(),
              [](auto *a, auto *b) { return a->local_header_offset < b->local_header_offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      const zip_entry &prev = *by_offset[i - 1];
      const zip_entry &cur = *by_offset[i];
      require(cur.local_header_offset >= prev.data_offset + prev.compressed_size, errc::invalid_format,
              [&] {
                return "entry overlaps '" + prev.name + "' (its data ends at " +
                       std::to_string(prev.data_offset + prev.compressed_size) + ")";
              },
              {name_, cur.local_header_offset, cur.name});
    }
  }

  mapped_file file_;
  std::string name_;
  std::span<const std::byte> bytes_;
  npz_options options_;
  std::vector<zip_entry> entries_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

//! Options of npz_writer::serialize and write.
struct npz_write_options {
  bool compress = false;    //!< deflate (np.savez_compressed) instead of stored (np.savez)
  bool force_zip64 = false; //!< zip64 fields and records even where 32 bits suffice
};

//! Collects float32 arrays and writes them as an .npz archive.
//! @code
//!   dms::npz_writer w;
//!   w.add("W_enc", w_enc, {d_in, d_sae});
//!   w.write("params.npz", {.compress = true});
//! @endcode
class npz_writer {
public:
  //! Adds `name`.npy holding `data` of `shape` (copied, encoded as np.save would).
  void add(std::string name, std::span<const float> data, std::vector<std::int64_t> shape) {
    add_entry(std::move(name) + ".npy", encode_npy(data, shape));
  }
  //! Adds an entry with arbitrary contents.
  void add_entry(std::string entry_name, std::vector<std::byte> contents) {
    require(!entry_name.empty() && is_valid_utf8(entry_name) && entry_name.size() <= 0xffff,
            errc::invalid_argument, [&] { return "bad entry name '" + entry_name + "'"; });
    for (const auto &e : entries_)
      require(e.first != entry_name, errc::invalid_argument,
              [&] { return "entry '" + entry_name + "' added twice"; });
    entries_.emplace_back(std::move(entry_name), std::move(contents));
  }

  std::vector<std::byte> serialize(npz_write_options options = {}) const {
    std::vector<std::byte> out;
    struct record {
      const std::string *name;
      std::uint32_t crc;
      std::uint64_t csize, usize, offset;
      std::uint16_t method;
    };
    std::vector<record> records;
    for (const auto &[name, contents] : entries_) {
      record r{&name,      detail::crc32_of(contents),
               0,          contents.size(),
               out.size(), static_cast<std::uint16_t>(options.compress ? 8 : 0)};
      std::vector<std::byte> packed = options.compress ? deflate_raw(contents) : std::vector<std::byte>{};
      const std::span<const std::byte> data =
          options.compress ? std::span<const std::byte>(packed) : std::span<const std::byte>(contents);
      r.csize = data.size();
      const bool z64 = options.force_zip64 || r.usize >= 0xffffffffu || r.csize >= 0xffffffffu;
      put32(out, detail::zip_local_sig);
      put16(out, z64 ? 45 : 20); // version needed: 4.5 for zip64, 2.0 for deflate
      put16(out, flags_for(name));
      put16(out, r.method);
      put16(out, 0);    // time 00:00:00
      put16(out, 0x21); // date 1980-01-01
      put32(out, r.crc);
      put32(out, z64 ? 0xffffffffu : static_cast<std::uint32_t>(r.csize));
      put32(out, z64 ? 0xffffffffu : static_cast<std::uint32_t>(r.usize));
      put16(out, static_cast<std::uint16_t>(name.size()));
      put16(out, z64 ? 20 : 0);
      put_bytes(out, name.data(), name.size());
      if (z64) {
        put16(out, 1);
        put16(out, 16);
        put64(out, r.usize);
        put64(out, r.csize);
      }
      put_bytes(out, data.data(), data.size());
      records.push_back(r);
    }
    const std::uint64_t cd_offset = out.size();
    for (const record &r : records) {
      const bool big_u = options.force_zip64 || r.usize >= 0xffffffffu;
      const bool big_c = options.force_zip64 || r.csize >= 0xffffffffu;
      const bool big_o = options.force_zip64 || r.offset >= 0xffffffffu;
      const std::uint16_t extra =
          static_cast<std::uint16_t>((big_u || big_c || big_o ? 4 : 0) + 8 * (big_u + big_c + big_o));
      put32(out, detail::zip_central_sig);
      put16(out, extra ? 45 : 20); // version made by
      put16(out, extra ? 45 : 20); // version needed
      put16(out, flags_for(*r.name));
      put16(out, r.method);
      put16(out, 0);
      put16(out, 0x21);
      put32(out, r.crc);
      put32(out, big_c ? 0xffffffffu : static_cast<std::uint32_t>(r.csize));
      put32(out, big_u ? 0xffffffffu : static_cast<std::uint32_t>(r.usize));
      put16(out, static_cast<std::uint16_t>(r.name->size()));
      put16(out, extra);
      put16(out, 0);           // comment length
      put16(out, 0);           // disk
      put16(out, 0);           // internal attributes
      put32(out, 0600u << 16); // external attributes: Unix rw------- (as zipfile writes)
      put32(out, big_o ? 0xffffffffu : static_cast<std::uint32_t>(r.offset));
      put_bytes(out, r.name->data(), r.name->size());
      if (extra) {
        put16(out, 1);
        put16(out, static_cast<std::uint16_t>(extra - 4));
        if (big_u) put64(out, r.usize);
        if (big_c) put64(out, r.csize);
        if (big_o) put64(out, r.offset);
      }
    }
    const std::uint64_t cd_size = out.size() - cd_offset;
    const std::uint64_t n = records.size();
    const bool z64_end =
        options.force_zip64 || n >= 0xffff || cd_size >= 0xffffffffu || cd_offset >= 0xffffffffu;
    if (z64_end) {
      const std::uint64_t z64 = out.size();
      put32(out, detail::zip64_eocd_sig);
      put64(out, 44); // size of the rest of the record
      put16(out, 45);
      put16(out, 45);
      put32(out, 0);
      put32(out, 0);
      put64(out, n);
      put64(out, n);
      put64(out, cd_size);
      put64(out, cd_offset);
      put32(out, detail::zip64_locator_sig);
      put32(out, 0);
      put64(out, z64);
      put32(out, 1);
    }
    put32(out, detail::zip_eocd_sig);
    put16(out, 0);
    put16(out, 0);
    put16(out, static_cast<std::uint16_t>(z64_end ? 0xffff : n));
    put16(out, static_cast<std::uint16_t>(z64_end ? 0xffff : n));
    put32(out, z64_end ? 0xffffffffu : static_cast<std::uint32_t>(cd_size));
    put32(out, z64_end ? 0xffffffffu : static_cast<std::uint32_t>(cd_offset));
    put16(out, 0); // comment length
    return out;
  }

  //! Writes the archive atomically.
  void write(const std::filesystem::path &path, npz_write_options options = {}) const {
    const auto bytes = serialize(options);
    atomic_file f(path);
    f.write(bytes);
    f.commit();
  }

private:
  static std::uint16_t flags_for(const std::string &name) {
    // Bit 11: the name is UTF-8 (only needed, and only set by zipfile, for non-ASCII names).
    return std::any_of(name.begin(), name.end(),
                       [](char ch) { return static_cast<unsigned char>(ch) >= 0x80; })
               ? std::uint16_t{0x0800}
               : std::uint16_t{0};
  }
  static void put_bytes(std::vector<std::byte> &out, const void *p, std::size_t n) {
    const auto *b = static_cast<const std::byte *>(p);
    out.insert(out.end(), b, b + n);
  }
  template <class T> static void put_le(std::vector<std::byte> &out, T v) {
    for (std::size_t i = 0; i < sizeof(T); ++i)
      out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xffu));
  }
  static void put16(std::vector<std::byte> &out, std::uint16_t v) { put_le(out, v); }
  static void put32(std::vector<std::byte> &out, std::uint32_t v) { put_le(out, v); }
  static void put64(std::vector<std::byte> &out, std::uint64_t v) { put_le(out, v); }

  static std::vector<std::byte> deflate_raw(std::span<const std::byte> src) {
    z_stream zs{};
    require(deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK,
            errc::io, [] { return std::string("zlib deflateInit2 failed"); });
    struct guard {
      z_stream *z;
      ~guard() { deflateEnd(z); }
    } g{&zs};
    std::vector<std::byte> out;
    constexpr std::size_t chunk = std::size_t{1} << 20;
    std::size_t in_pos = 0;
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
      if (zs.avail_in == 0 && in_pos < src.size()) {
        const std::size_t n = std::min<std::size_t>(src.size() - in_pos, std::size_t{1} << 30);
        zs.next_in = reinterpret_cast<Bytef *>(const_cast<std::byte *>(src.data() + in_pos));
        zs.avail_in = static_cast<uInt>(n);
        in_pos += n;
      }
      const std::size_t old = out.size();
      out.resize(old + chunk);
      zs.next_out = reinterpret_cast<Bytef *>(out.data() + old);
      zs.avail_out = static_cast<uInt>(chunk);
      rc = deflate(&zs, in_pos == src.size() ? Z_FINISH : Z_NO_FLUSH);
      require(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR, errc::io,
              [&] { return "zlib deflate failed (" + std::to_string(rc) + ")"; });
      out.resize(old + chunk - zs.avail_out);
    }
    return out;
  }

  std::vector<std::pair<std::string, std::vector<std::byte>>> entries_;
};

DMS_NAMESPACE_END
