//! The justified timeline layout, pure and O(n): month headers, day headers and rows of tiles
//! that keep their aspect ratio, each with a precomputed y offset so that the view renders only
//! the blocks near the viewport (absolute positioning) and finds them by binary search.

/// One timeline item as the layout sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    /// width / height, clamped to a sane range by the layout.
    pub aspect: f32,
    /// `YYYYMMDD` of the capture date, `0` when undated.
    pub day: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// `YYYYMM` (0: undated) and the number of items in it.
    Month { month: u32, count: u32 },
    /// `YYYYMMDD` and the number of items that day.
    Day { day: u32, count: u32 },
    /// Items `start..end` of the view.
    Row { start: u32, end: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Block {
    pub y: f64,
    pub h: f64,
    pub kind: Kind,
}

#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub blocks: Vec<Block>,
    /// Per item: left offset and width in a row (its top/height are the row's).
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    /// Per item: the index of its row block.
    pub row_of: Vec<u32>,
    pub total: f64,
}

pub const MONTH_H: f64 = 54.0;
pub const DAY_H: f64 = 30.0;
pub const GAP: f64 = 4.0;

/// Target row height for a container width (smaller on phones).
pub fn target_height(width: f64) -> f64 {
    if width < 500.0 {
        110.0
    } else if width < 900.0 {
        150.0
    } else {
        200.0
    }
}

impl Layout {
    /// Lays `cells` (sorted: newest first, grouped by day) out in `width` pixels.
    pub fn build(cells: &[Cell], width: f64, target: f64) -> Layout {
        let width = width.max(100.0);
        let n = cells.len();
        let mut l = Layout {
            blocks: Vec::with_capacity(n / 3 + 16),
            x: vec![0.0; n],
            w: vec![0.0; n],
            row_of: vec![0; n],
            total: 0.0,
        };
        let mut y = 0.0;
        let mut i = 0;
        while i < n {
            let month = cells[i].day / 100;
            let mut mend = i;
            while mend < n && cells[mend].day / 100 == month {
                mend += 1;
            }
            l.blocks.push(Block {
                y,
                h: MONTH_H,
                kind: Kind::Month {
                    month,
                    count: (mend - i) as u32,
                },
            });
            y += MONTH_H;
            while i < mend {
                let day = cells[i].day;
                let mut dend = i;
                while dend < mend && cells[dend].day == day {
                    dend += 1;
                }
                if month != 0 {
                    l.blocks.push(Block {
                        y,
                        h: DAY_H,
                        kind: Kind::Day {
                            day,
                            count: (dend - i) as u32,
                        },
                    });
                    y += DAY_H;
                }
                y = l.rows(cells, i, dend, y, width, target);
                i = dend;
            }
            y += GAP * 3.0;
        }
        l.total = y + 40.0;
        l
    }

    /// Greedy justified rows for `start..end`; returns the y after them.
    fn rows(
        &mut self,
        cells: &[Cell],
        start: usize,
        end: usize,
        mut y: f64,
        width: f64,
        target: f64,
    ) -> f64 {
        let mut s = start;
        while s < end {
            let mut sum = 0.0f64;
            let mut e = s;
            let mut full = false;
            while e < end {
                sum += aspect(cells[e].aspect);
                e += 1;
                let gaps = GAP * (e - s - 1) as f64;
                if sum * target + gaps >= width {
                    full = true;
                    break;
                }
            }
            let gaps = GAP * (e - s - 1) as f64;
            // A full row is scaled to the width exactly; the last one keeps the target height.
            let mut h = if full { (width - gaps) / sum } else { target };
            if !full && sum * h + gaps > width {
                h = (width - gaps) / sum;
            }
            let h = h.min(target * 2.5).max(1.0);
            let row = self.blocks.len() as u32;
            let mut x = 0.0f64;
            for (k, c) in cells.iter().enumerate().take(e).skip(s) {
                let w = aspect(c.aspect) * h;
                self.x[k] = x as f32;
                self.w[k] = w as f32;
                self.row_of[k] = row;
                x += w + GAP;
            }
            self.blocks.push(Block {
                y,
                h,
                kind: Kind::Row {
                    start: s as u32,
                    end: e as u32,
                },
            });
            y += h + GAP;
            s = e;
        }
        y
    }

    /// Indices `a..b` of the blocks intersecting `[top, bottom)`.
    pub fn visible(&self, top: f64, bottom: f64) -> (usize, usize) {
        let a = self.blocks.partition_point(|b| b.y + b.h <= top);
        let b = self.blocks.partition_point(|b| b.y < bottom);
        (a, b.max(a))
    }

    /// The month (`YYYYMM`) and day shown at content offset `y`.
    pub fn date_at(&self, y: f64) -> (u32, u32) {
        let i = self.blocks.partition_point(|b| b.y <= y);
        let mut day = 0;
        for b in self.blocks[..i].iter().rev() {
            match b.kind {
                Kind::Day { day: d, .. } if day == 0 => day = d,
                Kind::Month { month, .. } => return (month, day),
                _ => {}
            }
        }
        match self.blocks.first().map(|b| b.kind) {
            Some(Kind::Month { month, .. }) => (month, 0),
            _ => (0, 0),
        }
    }

    /// Month headers: (y, `YYYYMM`, count), in order.
    pub fn months(&self) -> impl Iterator<Item = (f64, u32, u32)> + '_ {
        self.blocks.iter().filter_map(|b| match b.kind {
            Kind::Month { month, count } => Some((b.y, month, count)),
            _ => None,
        })
    }
}

fn aspect(a: f32) -> f64 {
    if a.is_finite() && a > 0.0 {
        (a as f64).clamp(0.4, 3.0)
    } else {
        1.0
    }
}

/// `YYYYMMDD` from an ISO 8601 date (`0` when it does not start with one).
pub fn day_of(ts: Option<&str>) -> u32 {
    let Some(b) = ts.map(str::as_bytes) else {
        return 0;
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return 0;
    }
    let mut v = 0u32;
    for &c in b[..4].iter().chain(&b[5..7]).chain(&b[8..10]) {
        if !c.is_ascii_digit() {
            return 0;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fill_the_width_and_last_row_is_not_stretched() {
        // Two rows of five fill the width (4.5 × 200 px + gaps is short of 1000, 6 × 200 is
        // over); the eleventh photo is a last row of its own.
        let cells: Vec<Cell> = (0..11)
            .map(|i| Cell {
                aspect: if i % 2 == 0 { 1.5 } else { 0.75 },
                day: 20240503,
            })
            .collect();
        let l = Layout::build(&cells, 1000.0, 200.0);
        let rows: Vec<_> = l
            .blocks
            .iter()
            .filter(|b| matches!(b.kind, Kind::Row { .. }))
            .collect();
        assert!(rows.len() >= 2);
        for r in &rows[..rows.len() - 1] {
            if let Kind::Row { end, .. } = r.kind {
                let e = end as usize - 1;
                assert!((l.x[e] + l.w[e] - 1000.0).abs() < 0.5);
            }
        }
        assert_eq!(rows.last().map(|r| r.h), Some(200.0));
        assert_eq!(day_of(Some("2024-05-03T10:00:00")), 20240503);
    }
}
