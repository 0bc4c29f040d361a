//! Plain tables: no borders, bold header, three spaces between columns.

use comfy_table::{Attribute, Cell, Color, Table};

use crate::output::Output;

/// A new table in vmsan's style.
pub fn new_table(out: &Output, header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    if out.color {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    t.set_header(
        header
            .iter()
            .map(|h| Cell::new(h).add_attribute(Attribute::Bold)),
    );
    for col in t.column_iter_mut() {
        col.set_padding((0, 3));
    }
    t
}

/// A cell, coloured when colours are on. Its text may come from outside (an imported
/// snapshot's image reference): control characters are escaped.
pub fn cell(text: impl ToString, color: Option<Color>) -> Cell {
    let text = crate::escape::escape_text(&text.to_string());
    match color {
        Some(c) => Cell::new(text).fg(c),
        None => Cell::new(text),
    }
}

/// Render with trailing spaces removed and a final newline.
pub fn render(t: &Table) -> String {
    let mut s = t
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    s.push('\n');
    s
}
