//! Aligned columns for people: numbers to the right, words to the left.
//! A leaf module: the inspector and the command-line client print their
//! tables with it.

use std::io::{self, Write};

/// How a column lines up its cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Spaces between two columns.
const GAP: &str = "  ";
/// Spaces before every row by default, so tables stand out under the
/// headings the inspector prints above them.
const INDENT: &str = "  ";

/// Columns with a heading each, widened to fit every cell they are shown.
pub struct Columns {
    /// The first row.
    headings: Vec<&'static str>,
    /// How each column lines up.
    aligns: Vec<Align>,
    /// Width of each column, in characters.
    widths: Vec<usize>,
    /// Put before every row.
    indent: &'static str,
}

impl Columns {
    pub fn new(columns: &[(&'static str, Align)]) -> Columns {
        Columns {
            headings: columns.iter().map(|(heading, _)| *heading).collect(),
            aligns: columns.iter().map(|(_, align)| *align).collect(),
            widths: columns
                .iter()
                .map(|(heading, _)| heading.chars().count())
                .collect(),
            indent: INDENT,
        }
    }

    /// Rows start at the line's start, for a table printed alone.
    pub fn unindented(mut self) -> Columns {
        self.indent = "";
        self
    }

    /// Widens the columns to fit `cells`.
    pub fn fit(&mut self, cells: &[String]) {
        for (width, cell) in self.widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }

    /// Widens column `i` to at least `width`.
    pub fn fit_width(&mut self, i: usize, width: usize) {
        if let Some(w) = self.widths.get_mut(i) {
            *w = (*w).max(width);
        }
    }

    pub fn write_headings(&self, out: &mut dyn Write) -> io::Result<()> {
        let headings: Vec<String> = self.headings.iter().map(|h| h.to_string()).collect();
        self.write_row(out, &headings)
    }

    /// Writes one row; the last column is not padded, and no line ends in spaces.
    pub fn write_row(&self, out: &mut dyn Write, cells: &[String]) -> io::Result<()> {
        let mut line = String::from(self.indent);
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            let width = self.widths.get(i).copied().unwrap_or_default();
            let pad = width.saturating_sub(cell.chars().count());
            match self.aligns.get(i).copied().unwrap_or(Align::Left) {
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
                Align::Left if i == last => line.push_str(cell),
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        writeln!(out, "{}", line.trim_end())
    }
}

/// A table held in memory until written, so that every column fits its
/// widest cell.
pub struct Table {
    /// The columns, fitted to every row pushed.
    columns: Columns,
    /// The cells, row by row.
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: Columns::new(columns),
            rows: Vec::new(),
        }
    }

    /// Rows start at the line's start, for a table printed alone.
    pub fn unindented(mut self) -> Table {
        self.columns = self.columns.unindented();
        self
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.columns.fit(&row);
        self.rows.push(row);
    }

    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        self.columns.write_headings(out)?;
        for row in &self.rows {
            self.columns.write_row(out, row)?;
        }
        Ok(())
    }
}

/// Decimal digits of `n`, for sizing a column of numbers up to `n`.
pub fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}
