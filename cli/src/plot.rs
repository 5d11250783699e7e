//! The PNG plot of a training comparison: test accuracy per epoch (top) and cumulative bytes
//! on the wire per epoch (bottom, log scale), dense and gradcast on the same axes.
//!
//! Text is drawn with a font shipped in the repository (`cli/assets`, DejaVu Sans subset) via
//! plotters' pure-Rust `ab_glyph` renderer, so no system font or font library is needed.

use crate::error::CliError;
use crate::train::Summary;
use gradcast_candle::driver::EpochRecord;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ASCII.ttf");
pub(crate) const FAMILY: &str = "sans-serif";

pub(crate) fn register_font() -> Result<(), CliError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| CliError::Plot("the embedded font is not a valid TrueType font".into()));
    });
    result
}

fn err<E: std::fmt::Display>(e: E) -> CliError {
    CliError::Plot(e.to_string())
}

const DENSE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const GRADCAST: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// Draws the plot of `s` into a 1000x900 PNG at `path`.
///
/// # Errors
/// [`CliError::Plot`] when drawing or writing fails.
pub fn draw(path: &Path, s: &Summary) -> Result<(), CliError> {
    register_font()?;
    let root = BitMapBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "gradcast train: {} on {}, P = {}: {} vs gradcast ({})",
        s.model, s.data.name, s.config.workers, s.dense.exchange, s.config.threshold
    );
    let root = root.titled(&title, (FAMILY, 24).into_font()).map_err(err)?;
    let (top, bottom) = root.split_vertically(430);
    let epochs = s.dense.epochs.len().max(1) as f64;
    let series = |r: &[EpochRecord], f: fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        r.iter().map(|e| (e.epoch as f64, f(e))).collect()
    };

    // Accuracy.
    let acc_d = series(&s.dense.epochs, |e| 100.0 * e.test_accuracy);
    let acc_g = series(&s.gradcast.epochs, |e| 100.0 * e.test_accuracy);
    let lo = acc_d
        .iter()
        .chain(&acc_g)
        .map(|p| p.1)
        .fold(100.0f64, f64::min);
    let lo = (lo - 2.0).clamp(0.0, 98.0).floor();
    let mut chart = ChartBuilder::on(&top)
        .caption("test accuracy per epoch", (FAMILY, 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..epochs + 0.5, lo..100.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("test accuracy (%)")
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(err)?;
    for (data, color, name) in [
        (acc_d, DENSE, s.dense.exchange.as_str()),
        (acc_g, GRADCAST, "gradcast"),
    ] {
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FAMILY, 16))
        .draw()
        .map_err(err)?;

    // Cumulative bytes, log scale.
    let bytes_d = series(&s.dense.epochs, |e| e.cumulative_bytes.max(1) as f64);
    let bytes_g = series(&s.gradcast.epochs, |e| e.cumulative_bytes.max(1) as f64);
    let max = bytes_d
        .iter()
        .chain(&bytes_g)
        .map(|p| p.1)
        .fold(1.0, f64::max);
    let min = bytes_d
        .iter()
        .chain(&bytes_g)
        .map(|p| p.1)
        .fold(max, f64::min);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!(
                "bytes on the wire (cumulative, log scale): {:.0}x fewer with gradcast",
                s.compression_ratio
            ),
            (FAMILY, 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(0.5f64..epochs + 0.5, (min / 2.0..max * 2.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("bytes")
        .y_label_formatter(&|v| crate::report::human_bytes(*v as u64))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(err)?;
    for (data, color, name) in [
        (bytes_d, DENSE, s.dense.exchange.as_str()),
        (bytes_g, GRADCAST, "gradcast"),
    ] {
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FAMILY, 16))
        .draw()
        .map_err(err)?;
    root.present()
        .map_err(|e| CliError::Plot(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}
