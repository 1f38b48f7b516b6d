//! Image reference parsing (`PinnedImage::parse`), with its error messages and hints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slipway::image::reference::PinnedImage;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match PinnedImage::parse(text) {
        Ok(image) => {
            assert!(slipway::image::reference::is_sha256_digest(image.digest()));
            assert!(image.as_str().ends_with(image.digest()));
        }
        Err(e) => {
            let _ = (e.to_string(), e.hint());
        }
    }
});
