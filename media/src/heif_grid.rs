//! HEIF/AVIF grid images decoded tile by tile, at reduced size.
//!
//! Phones and cameras store large HEIF photos as a `grid` item: rows × columns of
//! independently coded tiles (iPhones: 512 × 512). libheif 1.15 decodes a grid by pasting every
//! tile into one full-resolution image, then converting it to RGB: a 200-MP photo needs well
//! over 1 GB for the few seconds of its decode, of which the preview keeps 1440 px.
//!
//! Here each tile is wrapped alone in a minimal HEIF file (its own properties, as libheif
//! converts a grid's tiles with their own colour properties; its coded data in `mdat`) and
//! decoded by libheif, and its pixels are box-averaged by an integer factor `k` straight into
//! a small canvas (at least the preview's size), so only the tiles in flight are ever decoded
//! at full resolution. The grid's rotation (`irot`) is applied to the canvas. A grid with a
//! mirror or a crop, or a structure this reader does not follow, is left to libheif's own
//! whole decode; a grid whose tile fails is damaged (libheif would decode the same tile) and
//! is an error, never decoded whole: the node admitted it with this path's memory estimate
//! ([`tiled_decode_mib`]).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use image::RgbImage;
use libheif_rs::{ColorSpace, HeifContext, LibHeif, RgbChroma};

use crate::derive::PREVIEW_LONG_SIDE;
use crate::video::{be_u16, be_u32, box_at};

/// Tiles in a grid at most (the format allows 256 × 256).
const MAX_TILES: usize = 65_536;
/// Extents of one item at most (libheif's own limit; writers use one).
const MAX_EXTENTS: u16 = 32;

/// A grid decoded at reduced size: the canvas (rotation applied) and the grid's displayed
/// dimensions at full resolution.
pub(crate) struct Scaled {
    pub image: RgbImage,
    pub width: u32,
    pub height: u32,
}

/// Why the tile path was not taken or failed.
type NotTiled = String;

/// How a tiled decode did not happen; see [`decode_scaled`].
#[derive(Debug)]
pub(crate) enum TileError {
    /// Why (read by the tests: the caller just decodes the image whole).
    NotTiled(#[cfg_attr(not(test), allow(dead_code))] String),
    Failed(String),
}

impl TileError {
    #[cfg(test)]
    fn reason(&self) -> &str {
        match self {
            Self::NotTiled(r) | Self::Failed(r) => r,
        }
    }
}

fn no<T>(why: &str) -> Result<T, NotTiled> {
    Err(why.to_owned())
}

/// The parts of `meta` a grid decode needs.
struct Meta<'a> {
    primary: u32,
    types: HashMap<u32, [u8; 4]>,
    /// Item id → (construction method, extents as (offset, length) with the base applied).
    locations: HashMap<u32, (u8, Vec<(u64, u64)>)>,
    /// `dimg` references: derived item → its inputs, in order.
    dimg: HashMap<u32, Vec<u32>>,
    properties: Properties<'a>,
    idat: &'a [u8],
}

/// An `iprp` box: the property boxes of `ipco` and which items `ipma` associates them with
/// (read for grid decodes here, and for the items' transforms in `heif.rs`).
pub(crate) struct Properties<'a> {
    /// Property boxes of `ipco`, whole (header included), in order (index 1 is the first).
    props: Vec<&'a [u8]>,
    /// Item id → (essential, 1-based property index).
    assoc: HashMap<u32, Vec<(bool, u16)>>,
}

impl<'a> Properties<'a> {
    /// `iprp`'s payload. At most `MAX_TILES` × 2 items per `ipma` box are read.
    pub(crate) fn parse(iprp: &'a [u8]) -> Option<Self> {
        let props: Vec<&[u8]> = boxes(find(iprp, b"ipco")?).map(|(_, w, _)| w).collect();
        let mut assoc = HashMap::new();
        for (kind, _, ipma) in boxes(iprp) {
            if &kind != b"ipma" {
                continue;
            }
            let (version, wide_index) = (*ipma.first()?, ipma.get(3)? & 1 == 1);
            let count = be_u32(ipma, 4)?;
            let mut at = 8;
            for _ in 0..count.min(MAX_TILES as u32 * 2) {
                let id = id_at(ipma, &mut at, version >= 1)?;
                let n = *ipma.get(at)?;
                at += 1;
                let mut list = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let (essential, index) = if wide_index {
                        let v = be_u16(ipma, at)?;
                        at += 2;
                        (v & 0x8000 != 0, v & 0x7FFF)
                    } else {
                        let v = *ipma.get(at)?;
                        at += 1;
                        (v & 0x80 != 0, u16::from(v & 0x7F))
                    };
                    list.push((essential, index));
                }
                assoc.entry(id).or_insert_with(Vec::new).extend(list);
            }
        }
        Some(Self { props, assoc })
    }

    /// The items that have properties.
    pub(crate) fn items(&self) -> impl Iterator<Item = u32> + '_ {
        self.assoc.keys().copied()
    }

    /// An item's properties: (essential, whole box), in `ipma`'s order (indexes that name no
    /// property are skipped).
    pub(crate) fn of(&self, id: u32) -> Vec<(bool, &'a [u8])> {
        self.assoc
            .get(&id)
            .map(|list| {
                list.iter()
                    .filter_map(|&(e, i)| {
                        Some((e, *self.props.get(usize::from(i).checked_sub(1)?)?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A whole box's type and payload.
pub(crate) fn kind_and_payload(whole: &[u8]) -> Option<([u8; 4], &[u8])> {
    boxes(whole).next().map(|(k, _, p)| (k, p))
}

/// Iterates boxes of `buf` as (type, whole box, payload).
fn boxes(buf: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8], &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let (kind, hdr, size) = box_at(buf, off)?;
        let whole = buf.get(off..off + size)?;
        let payload = whole.get(hdr..)?;
        off += size;
        Some((kind, whole, payload))
    })
}

fn find<'a>(buf: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(buf).find(|(k, _, _)| k == kind).map(|(_, _, p)| p)
}

/// Reads a big-endian unsigned integer of `size` bytes (0, 4 or 8) at `*at`, advancing it.
fn sized(b: &[u8], at: &mut usize, size: u8) -> Option<u64> {
    let v = match size {
        0 => 0,
        4 => u64::from(be_u32(b, *at)?),
        8 => u64::from_be_bytes(b.get(*at..*at + 8)?.try_into().ok()?),
        _ => return None,
    };
    *at += usize::from(size);
    Some(v)
}

fn id_at(b: &[u8], at: &mut usize, wide: bool) -> Option<u32> {
    let v = if wide {
        be_u32(b, *at)?
    } else {
        u32::from(be_u16(b, *at)?)
    };
    *at += if wide { 4 } else { 2 };
    Some(v)
}

impl<'a> Meta<'a> {
    fn parse(file: &'a [u8]) -> Option<Self> {
        let meta = boxes(file).find(|(k, _, _)| k == b"meta")?.2.get(4..)?;
        let pitm = find(meta, b"pitm")?;
        let primary = id_at(pitm, &mut 4, *pitm.first()? != 0)?;

        let mut types = HashMap::new();
        let iinf = find(meta, b"iinf")?;
        let skip = if *iinf.first()? == 0 { 6 } else { 8 };
        for (kind, _, infe) in boxes(iinf.get(skip..)?) {
            if &kind != b"infe" {
                continue;
            }
            let version = *infe.first()?;
            let mut at = 4;
            let id = match version {
                2 => id_at(infe, &mut at, false)?,
                3 => id_at(infe, &mut at, true)?,
                _ => continue,
            };
            at += 2; // item_protection_index
            types.insert(id, infe.get(at..at + 4)?.try_into().ok()?);
        }

        let mut locations = HashMap::new();
        let iloc = find(meta, b"iloc")?;
        let version = *iloc.first()?;
        let (offset_size, length_size) = (iloc.get(4)? >> 4, iloc.get(4)? & 15);
        // Every extent must take bytes to describe (a zero-sized length would let a small box
        // describe billions of extents), and no version past 2 is known.
        if version > 2 || length_size == 0 {
            return None;
        }
        let (base_size, index_size) = (iloc.get(5)? >> 4, iloc.get(5)? & 15);
        let mut at = 6;
        let count = if version < 2 {
            u32::from(be_u16(iloc, at)?)
        } else {
            be_u32(iloc, at)?
        };
        at += if version < 2 { 2 } else { 4 };
        for _ in 0..count.min(MAX_TILES as u32 * 2) {
            let id = id_at(iloc, &mut at, version >= 2)?;
            let method = if version >= 1 {
                let m = be_u16(iloc, at)? & 15;
                at += 2;
                m as u8
            } else {
                0
            };
            // Data in another file (a data reference) is not followed.
            let external = be_u16(iloc, at)? != 0;
            at += 2;
            let base = sized(iloc, &mut at, base_size)?;
            let extents = be_u16(iloc, at)?;
            at += 2;
            if extents > MAX_EXTENTS {
                return None;
            }
            let mut list = Vec::new();
            for _ in 0..extents {
                if version >= 1 && index_size > 0 {
                    sized(iloc, &mut at, index_size)?;
                }
                let off = sized(iloc, &mut at, offset_size)?;
                let len = sized(iloc, &mut at, length_size)?;
                list.push((base.checked_add(off)?, len));
            }
            if !external {
                locations.insert(id, (method, list));
            }
        }

        let mut dimg = HashMap::new();
        if let Some(iref) = find(meta, b"iref") {
            let wide = *iref.first()? != 0;
            for (kind, _, r) in boxes(iref.get(4..)?) {
                let mut at = 0;
                let from = id_at(r, &mut at, wide)?;
                let n = be_u16(r, at)?;
                at += 2;
                let to: Option<Vec<u32>> = (0..n).map(|_| id_at(r, &mut at, wide)).collect();
                if &kind == b"dimg" {
                    dimg.insert(from, to?);
                }
            }
        }

        let properties = Properties::parse(find(meta, b"iprp")?)?;
        let idat = find(meta, b"idat").unwrap_or_default();
        Some(Self {
            primary,
            types,
            locations,
            dimg,
            properties,
            idat,
        })
    }

    /// An item's bytes (its extents, concatenated).
    fn data(&self, file: &[u8], id: u32) -> Option<Vec<u8>> {
        let (method, extents) = self.locations.get(&id)?;
        let source = match method {
            0 => file,
            1 => self.idat,
            _ => return None,
        };
        let mut out = Vec::new();
        for &(off, len) in extents {
            let off = usize::try_from(off).ok()?;
            // A length of 0 means "to the end" in the format; no tile is written so.
            let len = usize::try_from(len).ok().filter(|l| *l > 0)?;
            out.extend_from_slice(source.get(off..off.checked_add(len)?)?);
        }
        Some(out)
    }

    /// An item's properties: (essential, whole box).
    fn properties(&self, id: u32) -> Vec<(bool, &'a [u8])> {
        self.properties.of(id)
    }
}

fn kind_of(prop: &[u8]) -> &[u8] {
    prop.get(4..8).unwrap_or_default()
}

fn put_box(out: &mut Vec<u8>, kind: &[u8; 4], payload: &[u8]) {
    let size = u32::try_from(8 + payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(payload);
}

/// A minimal HEIF file holding one coded image item (id 1) with `props` and `data`.
fn single_item_file(item_type: [u8; 4], props: &[(bool, &[u8])], data: &[u8]) -> Option<Vec<u8>> {
    if props.len() > 127 {
        return None;
    }
    let brand: &[u8; 4] = if &item_type == b"av01" {
        b"avif"
    } else {
        b"heic"
    };
    let mut ftyp = Vec::new();
    ftyp.extend_from_slice(brand);
    ftyp.extend_from_slice(&0u32.to_be_bytes());
    ftyp.extend_from_slice(b"mif1");
    ftyp.extend_from_slice(brand);

    let mut meta = vec![0u8; 4];
    let mut hdlr = vec![0u8; 8];
    hdlr.extend_from_slice(b"pict");
    hdlr.extend_from_slice(&[0; 13]);
    put_box(&mut meta, b"hdlr", &hdlr);
    put_box(&mut meta, b"pitm", &[0, 0, 0, 0, 0, 1]);
    let mut infe = vec![2, 0, 0, 0, 0, 1, 0, 0];
    infe.extend_from_slice(&item_type);
    infe.push(0);
    let mut iinf = vec![0, 0, 0, 0, 0, 1];
    put_box(&mut iinf, b"infe", &infe);
    put_box(&mut meta, b"iinf", &iinf);
    let mut ipco = Vec::new();
    let mut ipma = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 1, props.len() as u8];
    for (i, (essential, prop)) in props.iter().enumerate() {
        ipco.extend_from_slice(prop);
        ipma.push(u8::from(*essential) << 7 | (i as u8 + 1));
    }
    let mut iprp = Vec::new();
    put_box(&mut iprp, b"ipco", &ipco);
    put_box(&mut iprp, b"ipma", &ipma);
    put_box(&mut meta, b"iprp", &iprp);
    // iloc v0, 4-byte offsets and lengths, one item with one extent; its offset is patched
    // once the layout is known.
    let len = u32::try_from(data.len()).ok()?;
    let mut iloc = vec![0, 0, 0, 0, 0x44, 0x00, 0, 1, 0, 1, 0, 0, 0, 1];
    let offset_at = iloc.len();
    iloc.extend_from_slice(&[0; 4]);
    iloc.extend_from_slice(&len.to_be_bytes());
    let iloc_start = meta.len() + 8;
    put_box(&mut meta, b"iloc", &iloc);

    let mut out = Vec::with_capacity(data.len() + meta.len() + 64);
    put_box(&mut out, b"ftyp", &ftyp);
    let meta_start = out.len() + 8;
    put_box(&mut out, b"meta", &meta);
    let mdat_payload = u32::try_from(out.len() + 8).ok()?;
    let patch = meta_start + iloc_start + offset_at;
    out.get_mut(patch..patch + 4)?
        .copy_from_slice(&mdat_payload.to_be_bytes());
    put_box(&mut out, b"mdat", data);
    Some(out)
}

/// One tile decoded: packed RGB rows.
struct Tile {
    index: usize,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

fn decode_tile(lib: &LibHeif, index: usize, single: &[u8]) -> Result<Tile, NotTiled> {
    let err = |e: libheif_rs::HeifError| format!("tile {index}: {}", e.message);
    let ctx = HeifContext::read_from_bytes(single).map_err(err)?;
    let handle = ctx.primary_image_handle().map_err(err)?;
    let img = lib
        .decode(&handle, ColorSpace::Rgb(RgbChroma::Rgb), None)
        .map_err(err)?;
    let (width, height) = (img.width(), img.height());
    let planes = img.planes();
    let Some(plane) = planes.interleaved else {
        return no("no interleaved RGB plane");
    };
    let row = width as usize * 3;
    let mut rgb = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        let start = y * plane.stride;
        match plane.data.get(start..start + row) {
            Some(line) => rgb.extend_from_slice(line),
            None => return no("short pixel plane"),
        }
    }
    Ok(Tile {
        index,
        width,
        height,
        rgb,
    })
}

/// Adds one row of packed RGB starting at canvas column `x0` (full resolution) into the
/// canvas row's sums, `k` source pixels per canvas pixel.
fn add_row(sums: &mut [u32], line: &[u8], x0: u32, k: u32) {
    let mut dx = (x0 / k) as usize * 3;
    let mut left = k - x0 % k;
    for px in line.chunks_exact(3) {
        if let Some(s) = sums.get_mut(dx..dx + 3) {
            s[0] += u32::from(px[0]);
            s[1] += u32::from(px[1]);
            s[2] += u32::from(px[2]);
        }
        left -= 1;
        if left == 0 {
            left = k;
            dx += 3;
        }
    }
}

/// What a tiled decode of a file will do, checked before any pixel is decoded.
struct Plan<'a> {
    meta: Meta<'a>,
    rotation: u8,
    out_w: u32,
    out_h: u32,
    cols: u32,
    /// The averaging factor: `k × k` source pixels per canvas pixel.
    k: u32,
    tiles: Vec<u32>,
    tw: u32,
    th: u32,
}

/// Threads decoding tiles of one image.
fn tile_threads(tiles: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(tiles)
}

/// Memory a tiled decode of this file needs at most, in MiB, when it will be tiled: the canvas
/// sums and pixels, the tiles in flight (each as libheif's planes, its RGB and our copy) and
/// the preview's buffers; the file's own bytes are not counted. `None` when the file will not
/// be tiled. Reads only the top-level box headers, the `meta` box (before or after `mdat`:
/// Samsung writes it last) and the grid's descriptor.
pub fn tiled_decode_mib<R: Read + Seek>(file: &mut R) -> Option<u64> {
    const MAX_META: u64 = 16 << 20;
    let end = file.seek(SeekFrom::End(0)).ok()?;
    let mut off = 0u64;
    let mut meta_box = None;
    for _ in 0..64 {
        if off >= end {
            break;
        }
        file.seek(SeekFrom::Start(off)).ok()?;
        let mut h = [0u8; 16];
        let n = file.read(&mut h).ok()?;
        let h = h.get(..n)?;
        let size32 = u64::from(be_u32(h, 0)?);
        let size = match size32 {
            0 => end - off,
            1 => u64::from_be_bytes(h.get(8..16)?.try_into().ok()?),
            s => s,
        };
        if size < 8 {
            return None;
        }
        if h.get(4..8)? == b"meta" {
            if size > MAX_META || off.checked_add(size)? > end {
                return None;
            }
            let mut buf = vec![0u8; usize::try_from(size).ok()?];
            file.seek(SeekFrom::Start(off)).ok()?;
            file.read_exact(&mut buf).ok()?;
            meta_box = Some(buf);
            break;
        }
        off = off.checked_add(size)?;
    }
    let buf = meta_box?;
    let meta = Meta::parse(&buf)?;
    let desc = match meta.locations.get(&meta.primary)? {
        (1, _) => meta.data(&buf, meta.primary)?,
        (0, extents) => {
            let mut desc = Vec::new();
            for &(at, len) in extents {
                if len > 64 {
                    return None;
                }
                file.seek(SeekFrom::Start(at)).ok()?;
                let mut part = vec![0u8; len as usize];
                file.read_exact(&mut part).ok()?;
                desc.extend_from_slice(&part);
            }
            desc
        }
        _ => return None,
    };
    let p = plan_from(meta, Some(desc)).ok()?;
    let canvas = u64::from(p.out_w.div_ceil(p.k)) * u64::from(p.out_h.div_ceil(p.k)) * 3 * 6;
    let in_flight = (2 * tile_threads(p.tiles.len()) + 1) as u64;
    // Each tile in flight: libheif's planes, its RGB and our copy (8 bytes a pixel), and its
    // coded bytes three times (ours, the wrapped file, libheif's).
    let tiles = in_flight.saturating_mul(u64::from(p.tw) * u64::from(p.th) * 20);
    let preview = u64::from(PREVIEW_LONG_SIDE).pow(2) * 3 * 2;
    Some(
        canvas
            .saturating_add(tiles)
            .saturating_add(preview)
            .div_ceil(1 << 20),
    )
}

fn plan(file: &[u8]) -> Result<Plan<'_>, NotTiled> {
    let Some(meta) = Meta::parse(file) else {
        return no("meta not readable");
    };
    let desc = meta.data(file, meta.primary);
    plan_from(meta, desc)
}

/// The plan from the `meta` box and the primary item's bytes (the grid descriptor).
fn plan_from(meta: Meta<'_>, desc: Option<Vec<u8>>) -> Result<Plan<'_>, NotTiled> {
    if meta.types.get(&meta.primary) != Some(b"grid") {
        return no("not a grid");
    }
    let grid = meta.properties(meta.primary);
    let mut rotation = 0u8;
    for (_, p) in &grid {
        match kind_of(p) {
            b"irot" => rotation = p.get(8).copied().unwrap_or(0) & 3,
            b"imir" | b"clap" => return no("mirrored or cropped grid"),
            _ => {}
        }
    }
    let Some(desc) = desc else {
        return no("grid descriptor not readable");
    };
    let (rows, cols) = match (desc.get(2), desc.get(3)) {
        (Some(r), Some(c)) => (u32::from(*r) + 1, u32::from(*c) + 1),
        _ => return no("short grid descriptor"),
    };
    let (out_w, out_h) = if desc.get(1).is_some_and(|f| f & 1 == 1) {
        (be_u32(&desc, 4), be_u32(&desc, 8))
    } else {
        (
            be_u16(&desc, 4).map(u32::from),
            be_u16(&desc, 6).map(u32::from),
        )
    };
    let (Some(out_w), Some(out_h)) = (out_w, out_h) else {
        return no("short grid descriptor");
    };
    if crate::derive::check_dims(out_w, out_h).is_err() {
        return no("grid dimensions out of range");
    }
    // With at most 250 MP and a canvas of at least 1440 px on its long side, no canvas pixel
    // sums more than 2^32 / 255 source pixels.
    let k = out_w.max(out_h) / PREVIEW_LONG_SIDE;
    if k < 2 {
        return no("small enough to decode whole");
    }
    let tiles = meta.dimg.get(&meta.primary).cloned().unwrap_or_default();
    if tiles.len() != (rows * cols) as usize || tiles.len() > MAX_TILES {
        return no("tile count does not match the grid");
    }
    // Every tile is a coded image of one declared size that, rows × columns, covers the output
    // with every row and column showing: checked before anything is decoded.
    let mut declared = None;
    for &tile in &tiles {
        if !matches!(meta.types.get(&tile), Some(b"hvc1" | b"av01")) {
            return no("a tile is not an HEVC or AV1 image");
        }
        let ispe = meta
            .properties(tile)
            .into_iter()
            .find(|(_, p)| kind_of(p) == b"ispe")
            .and_then(|(_, p)| Some((be_u32(p, 12)?, be_u32(p, 16)?)));
        match (ispe, declared) {
            (None, _) => return no("a tile without its size"),
            (Some(size), None) => declared = Some(size),
            (Some(size), Some(d)) if size != d => return no("tiles of different sizes"),
            _ => {}
        }
    }
    let Some((tw, th)) = declared else {
        return no("no tiles");
    };
    let covers = |n: u32, t: u32, out: u32| {
        let (n, t, out) = (u64::from(n), u64::from(t), u64::from(out));
        t > 0 && n * t >= out && (n - 1) * t < out
    };
    if !covers(cols, tw, out_w) || !covers(rows, th, out_h) {
        return no("tiles do not cover the grid");
    }
    if crate::derive::check_dims(tw, th).is_err() {
        return no("tiles too large");
    }
    // A tile's coded bytes are never more than its pixels uncompressed (copies of them are in
    // flight on every thread).
    let tile_bytes = u64::from(tw) * u64::from(th) * 4 + (64 << 10);
    for tile in &tiles {
        let coded: u64 = meta.locations.get(tile).map_or(0, |(_, e)| {
            e.iter().map(|(_, len)| *len).fold(0, u64::saturating_add)
        });
        if coded > tile_bytes {
            return no("a tile's coded data is larger than its pixels");
        }
    }
    Ok(Plan {
        meta,
        rotation,
        out_w,
        out_h,
        cols,
        k,
        tiles,
        tw,
        th,
    })
}

/// Decodes the file's primary image tile by tile when it is a grid at least twice as large as
/// the preview on its long side; see the module documentation.
///
/// `Err(TileError::NotTiled)`: the file is not for this path (decode it whole).
/// `Err(TileError::Failed)`: it is, and a tile could not be decoded: the file is damaged, and
/// it is not decoded whole either (libheif decodes the same tiles, and the job was admitted
/// with this path's memory estimate, not a whole decode's).
pub(crate) fn decode_scaled(file: &[u8]) -> Result<Scaled, TileError> {
    let Plan {
        meta,
        rotation,
        out_w,
        out_h,
        cols,
        k,
        tiles,
        tw,
        th,
    } = plan(file).map_err(TileError::NotTiled)?;

    let (dw, dh) = (out_w.div_ceil(k), out_h.div_ceil(k));
    let mut sums = vec![0u32; dw as usize * dh as usize * 3];

    // Tiles are decoded on up to 4 threads (as libheif's own grid decode does), each into a
    // packed RGB buffer that this thread adds into the canvas: at most two tiles per thread
    // exist at once.
    let tiles = &tiles;
    let wrap = |i: usize| -> Result<Vec<u8>, NotTiled> {
        let Some(&tile) = tiles.get(i) else {
            return no("no such tile");
        };
        let Some(item_type) = meta.types.get(&tile).copied() else {
            return no("tile without an item type");
        };
        // The tile's own properties only: libheif 1.15 converts each tile of a grid with the
        // tile's colour properties (or its bitstream's), never the grid's.
        let props = meta.properties(tile);
        let Some(data) = meta.data(file, tile) else {
            return Err(format!(
                "tile {i} of the grid: its coded data is not in the file (cut short?)"
            ));
        };
        match single_item_file(item_type, &props, &data) {
            Some(single) => Ok(single),
            None => no("tile cannot be wrapped"),
        }
    };
    let threads = tile_threads(tiles.len());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<(), NotTiled> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Tile, NotTiled>>(threads);
        for _ in 0..threads {
            let (tx, next, stop, wrap) = (tx.clone(), &next, &stop, &wrap);
            scope.spawn(move || {
                let lib = LibHeif::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= tiles.len() {
                        break;
                    }
                    let tile = wrap(i).and_then(|single| {
                        // libheif is C, but guard the wrapper: a panic here is a failed tile
                        // (and so the whole decode), not a failed image.
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            decode_tile(&lib, i, &single)
                        }))
                        .unwrap_or_else(|_| no("tile decoder panicked"))
                    });
                    if tx.send(tile).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for tile in rx {
            let tile = match tile {
                Ok(t) => t,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            };
            if (tile.width, tile.height) != (tw, th) {
                stop.store(true, Ordering::Relaxed);
                return no("a tile decoded to another size than it declares");
            }
            let i = tile.index as u32;
            let (x0, y0) = ((i % cols) * tw, (i / cols) * th);
            let visible = tw.min(out_w.saturating_sub(x0)) as usize;
            let row_len = tw as usize * 3;
            for y in 0..th.min(out_h.saturating_sub(y0)) {
                let start = y as usize * row_len;
                let Some(line) = tile.rgb.get(start..start + visible * 3) else {
                    return no("short tile");
                };
                let dy = ((y0 + y) / k) as usize;
                let row_sums = &mut sums[dy * dw as usize * 3..(dy + 1) * dw as usize * 3];
                add_row(row_sums, line, x0, k);
            }
        }
        Ok(())
    })
    .map_err(TileError::Failed)?;
    let mut pixels = Vec::with_capacity(sums.len());
    for dy in 0..dh {
        let ch = k.min(out_h - dy * k);
        for dx in 0..dw {
            let n = k.min(out_w - dx * k) * ch;
            let at = (dy as usize * dw as usize + dx as usize) * 3;
            for c in 0..3 {
                pixels.push(((sums[at + c] + n / 2) / n) as u8);
            }
        }
    }
    drop(sums);
    let Some(canvas) = RgbImage::from_raw(dw, dh, pixels) else {
        return Err(TileError::Failed("bad canvas size".into()));
    };
    // irot turns anticlockwise.
    let image = match rotation {
        1 => image::imageops::rotate270(&canvas),
        2 => image::imageops::rotate180(&canvas),
        3 => image::imageops::rotate90(&canvas),
        _ => canvas,
    };
    let (width, height) = if rotation % 2 == 1 {
        (out_h, out_w)
    } else {
        (out_w, out_h)
    };
    Ok(Scaled {
        image,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The iPhone 13 Pro grid of the corpus (`None`: no corpus, and none is required).
    fn pug() -> Option<Vec<u8>> {
        let dir = crate::test_corpus()?;
        Some(std::fs::read(dir.join("heic_iphone13pro.heic")).expect("the corpus's pug.heic"))
    }

    #[test]
    fn a_single_tile_wraps_into_a_file_libheif_decodes() {
        let Some(bytes) = pug() else {
            return;
        };
        let meta = Meta::parse(&bytes).unwrap();
        let tiles = meta.dimg.get(&meta.primary).unwrap();
        assert_eq!(tiles.len(), 48, "pug.heic is an 8 x 6 grid");
        let single = single_item_file(
            meta.types[&tiles[0]],
            &meta.properties(tiles[0]),
            &meta.data(&bytes, tiles[0]).unwrap(),
        )
        .unwrap();
        let tile = decode_tile(&LibHeif::new(), 0, &single).unwrap();
        assert_eq!(
            (tile.width, tile.height, tile.rgb.len()),
            (512, 512, 512 * 512 * 3)
        );
    }

    /// Sizes that lie: an iloc claiming 2^31 items of zero-sized fields is refused at once;
    /// tiles declaring a size they do not decode to, or one that does not tile the grid, are
    /// refused before or at their decode (and the caller decodes whole).
    #[test]
    fn lying_sizes_are_refused() {
        let mut meta = vec![0u8; 4];
        put_box(&mut meta, b"pitm", &[0, 0, 0, 0, 0, 1]);
        put_box(&mut meta, b"iinf", &[0, 0, 0, 0, 0, 0]);
        put_box(&mut meta, b"iloc", &[2, 0, 0, 0, 0x40, 0x00, 0x80, 0, 0, 0]);
        let mut file = Vec::new();
        put_box(&mut file, b"ftyp", b"heic\0\0\0\0mif1heic");
        put_box(&mut file, b"meta", &meta);
        assert!(Meta::parse(&file).is_none());
        assert!(decode_scaled(&file).is_err());

        let Some(bytes) = pug() else {
            return;
        };
        let tile_ispe = bytes
            .windows(20)
            .position(|w| w == b"\0\0\0\x14ispe\0\0\0\0\0\0\x02\0\0\0\x02\0")
            .expect("pug.heic's tiles declare 512 x 512");
        for (width, why) in [
            (513u32, "a tile decoded to another size than it declares"),
            (1024, "tiles do not cover the grid"),
            (0, "tiles do not cover the grid"),
        ] {
            let mut lying = bytes.clone();
            lying[tile_ispe + 12..tile_ispe + 16].copy_from_slice(&width.to_be_bytes());
            let err = decode_scaled(&lying).err();
            assert_eq!(err.as_ref().map(TileError::reason), Some(why), "{width}");
        }
    }

    /// The estimate the node's job queue admits a decode with: tens of MiB for a tiled grid,
    /// read from the file wherever its `meta` box is; none for what is decoded whole.
    #[test]
    fn tiled_decodes_are_estimated_from_the_meta_box() {
        let Some(dir) = crate::test_corpus() else {
            return;
        };
        let estimate = |name: &str| {
            let mut f = std::fs::File::open(dir.join(name)).unwrap();
            tiled_decode_mib(&mut f)
        };
        // Its `meta` box comes after 2.4 MB of `mdat` (Samsung's layout).
        let mib = estimate("large/heic_200mp.heic").unwrap();
        assert!((16..128).contains(&mib), "{mib}");
        for small_grid in ["heic_iphone13pro.heic", "heic_samsung_s25.heic"] {
            assert!(
                estimate(small_grid).is_some_and(|m| m < 128),
                "{small_grid}"
            );
        }
        // Sony's 33-MP .HIF is a grid of large tiles (its stored thumbnail is decoded instead,
        // but the estimate stays an upper bound).
        assert!(estimate("hif_sony_irot90.hif").is_some());
        for whole in ["heic_xiaomi.heic", "avif_photo.avif"] {
            assert_eq!(estimate(whole), None, "{whole}");
        }
        // A file cut before or inside its `meta` box is no estimate (and no panic).
        let big = std::fs::read(dir.join("large/heic_200mp.heic")).unwrap();
        for cut in [0, 7, 24, 1 << 20, big.len() - 40_000] {
            let mut c = std::io::Cursor::new(&big[..cut]);
            assert_eq!(tiled_decode_mib(&mut c), None, "{cut}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        /// Damaged containers (bytes overwritten anywhere in the boxes, cuts) never panic the
        /// reader: it answers with a picture or a reason.
        #[test]
        fn damaged_containers_are_refused_or_read(
            at in 0usize..4096,
            patch in proptest::collection::vec(any::<u8>(), 1..8),
            cut in proptest::option::of(0usize..8192),
            decode in proptest::bool::weighted(0.03),
        ) {
            let Some(mut bytes) = pug() else {
                return Ok(());
            };
            for (i, b) in patch.iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + i) {
                    *x = *b;
                }
            }
            if let Some(c) = cut {
                bytes.truncate(c);
            }
            if let Some(meta) = Meta::parse(&bytes) {
                for id in meta.types.keys() {
                    let _ = meta.data(&bytes, *id);
                    let _ = meta.properties(*id);
                }
            }
            if decode {
                let _ = decode_scaled(&bytes);
            }
        }
    }
}
