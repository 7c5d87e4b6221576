//! Plain-text tables: the first column left-aligned, the others right-aligned, two spaces apart.

/// Renders `rows` (the first one is the header), leaving out the columns whose `keep` is false.
pub fn render(rows: &[Vec<String>], keep: &[bool]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if !keep[column] {
                continue;
            }
            let pad = widths[column] - cell.chars().count();
            if column == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_and_drops_columns() {
        let rows = vec![
            vec!["name".to_string(), "skip".to_string(), "n".to_string()],
            vec!["ab".to_string(), "x".to_string(), "1234".to_string()],
        ];
        assert_eq!(
            super::render(&rows, &[true, false, true]),
            "name     n\nab    1234\n"
        );
    }
}
