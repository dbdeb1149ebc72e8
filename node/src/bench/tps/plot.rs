//! The plot of `int bench tps`: throughput against batch and block size, on
//! log–log axes, as SVG.

use std::path::Path;

use plotters::prelude::*;

use super::TpsReport;

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const PURPLE_: RGBColor = RGBColor(148, 103, 189);

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// `2^k` as `256`, `1k`, `64k`, `1M`.
fn pow2_label(k: u32) -> String {
    match k {
        0..=9 => format!("{}", 1u64 << k),
        10..=19 => format!("{}k", 1u64 << (k - 10)),
        20..=40 => format!("{}M", 1u64 << (k - 20)),
        _ => format!("2^{k}"),
    }
}

/// `1500` → `1.5k`, `65536` → `66k`, `2000000` → `2M`.
fn human(v: f64) -> String {
    let (x, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if x >= 10.0 || x.fract().abs() < 0.05 {
        format!("{x:.0}{unit}")
    } else {
        format!("{x:.1}{unit}")
    }
}

/// Draws the report's size sweep (and the raw bound and end-to-end figures
/// at `sigs`, the market's at the block size, where measured) into `path`.
pub fn draw(path: &Path, r: &TpsReport) -> Result<(), String> {
    // x is log2 of the size, so that every power of two gets a tick.
    let lg = |n: usize| (n.max(1) as f64).log2();
    let verify: Vec<(f64, f64)> = r
        .sizes
        .iter()
        .filter_map(|p| p.batch_verify_sigs_per_s.map(|v| (lg(p.size), v)))
        .collect();
    let exec: Vec<(f64, f64)> = r
        .sizes
        .iter()
        .filter_map(|p| p.exec_commit_tx_per_s.map(|v| (lg(p.size), v)))
        .collect();
    let raw = r.sigs.zip(r.raw_verify_sigs_per_s).map(|(n, v)| (lg(n), v));
    let e2e = r.sigs.zip(r.e2e_tx_per_s).map(|(n, v)| (lg(n), v));
    let market = r
        .exec_commit_market_ops_per_s
        .map(|v| (lg(r.exec.block_txs), v));
    let marks = [raw, e2e, market];

    let xs = verify
        .iter()
        .chain(&exec)
        .chain(marks.iter().flatten())
        .map(|p| p.0);
    let ys = verify
        .iter()
        .chain(&exec)
        .chain(marks.iter().flatten())
        .map(|p| p.1)
        .chain([r.exec_commit_tx_per_s]);
    let fold = |it: &mut dyn Iterator<Item = f64>| {
        it.filter(|v| v.is_finite() && *v > 0.0)
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (x0, x1) = fold(&mut xs.into_iter());
    let (y0, y1) = fold(&mut ys.into_iter());
    let (x0, x1) = if x0 <= x1 {
        (x0.floor() - 0.5, x1.ceil() + 0.5)
    } else {
        (0.0, 20.0)
    };
    let (y0, y1) = if y0 <= y1 {
        // Whole decades, so that the lowest one gets its ticks.
        (
            10f64.powf((y0 * 0.9).log10().floor()),
            10f64.powf((y1 * 1.1).log10().ceil()),
        )
    } else {
        (1.0, 1e7)
    };

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let cpu = r.machine.cpu.as_deref().unwrap_or("unknown CPU");
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "INT throughput — {} cores ({cpu}), {} accounts",
                r.machine.cores, r.accounts
            ),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("batch / block size (transactions, log scale)")
        .y_desc("per second (log scale)")
        .x_labels((x1 - x0).round() as usize + 1)
        .y_labels(40)
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 {
                pow2_label(v.round() as u32)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| {
            // Ticks at 1..9 × each decade; labels at 1, 2 and 5 only.
            let mantissa = *v / 10f64.powf(v.log10().floor());
            if [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 0.05) {
                human(*v)
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;

    if !verify.is_empty() {
        chart
            .draw_series(LineSeries::new(
                verify.iter().copied(),
                BLUE_.stroke_width(2),
            ))
            .map_err(err)?
            .label("batch_verify, signatures/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE_.stroke_width(2)));
        chart
            .draw_series(verify.iter().map(|&p| Circle::new(p, 4, BLUE_.filled())))
            .map_err(err)?;
    }
    if !exec.is_empty() {
        chart
            .draw_series(LineSeries::new(
                exec.iter().copied(),
                ORANGE_.stroke_width(2),
            ))
            .map_err(err)?
            .label("execute + commit, transactions/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], ORANGE_.stroke_width(2)));
        chart
            .draw_series(exec.iter().map(|&p| Circle::new(p, 4, ORANGE_.filled())))
            .map_err(err)?;
    }
    if let Some(raw) = raw {
        chart
            .draw_series(std::iter::once(TriangleMarker::new(
                raw,
                7,
                GREEN_.filled(),
            )))
            .map_err(err)?
            .label("aggregate_verify (raw bound), signatures/s")
            .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, GREEN_.filled()));
    }
    if let Some(e2e) = e2e {
        chart
            .draw_series(std::iter::once(Cross::new(e2e, 7, RED_.stroke_width(3))))
            .map_err(err)?
            .label(format!(
                "end to end, transactions/s ({:.2} of the raw bound)",
                r.e2e_ratio.unwrap_or(f64::NAN)
            ))
            .legend(|(x, y)| Cross::new((x + 10, y), 6, RED_.stroke_width(3)));
    }
    if let Some(market) = market {
        chart
            .draw_series(std::iter::once(Circle::new(
                market,
                7,
                PURPLE_.stroke_width(3),
            )))
            .map_err(err)?
            .label(format!(
                "execute + commit, market operations/s ({:.2} of transfers)",
                r.exec_commit_market_vs_transfers.unwrap_or(f64::NAN)
            ))
            .legend(|(x, y)| Circle::new((x + 10, y), 6, PURPLE_.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
