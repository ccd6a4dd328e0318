//! Small pictures the image tests share.
//!
//! Inputs of the expected values computed with PIL 13:
//!   `rgb[y][x] = ((x*37 + y*11) % 256, (x*5 + y*71) % 256, (x*113 + y*29) % 256)`, 7x5
//!   `grey[y][x] = (x*53 + y*19) % 256`, 5x12
//!   `alpha[y][x] = [0, 255, 1, 77, 128, 200, 30][(x + y) % 7]`
//!   `np.array(Image.fromarray(a, mode).resize(size, Image.LANCZOS)[.convert("L")]).flatten()`

use super::{ColorMode, DecodedImage};

pub(super) fn rgb_7x5() -> DecodedImage {
    let pixels = (0..5)
        .flat_map(|y| {
            (0..7).flat_map(move |x| {
                [
                    ((x * 37 + y * 11) % 256) as u8,
                    ((x * 5 + y * 71) % 256) as u8,
                    ((x * 113 + y * 29) % 256) as u8,
                ]
            })
        })
        .collect();
    DecodedImage::from_raw(7, 5, ColorMode::Rgb, pixels).unwrap()
}

pub(super) fn grey_5x12() -> Vec<u8> {
    (0..12)
        .flat_map(|y| (0..5).map(move |x| ((x * 53 + y * 19) % 256) as u8))
        .collect()
}

pub(super) fn png_bytes(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(color);
    encoder.set_depth(depth);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
    bytes
}
