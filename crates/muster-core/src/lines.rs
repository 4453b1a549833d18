//! Where in a text a byte offset falls: the line numbers that `file:line`
//! errors name. Every file muster reads (config, static records, naming
//! policy) reports its errors this way.

/// Maps byte offsets of one text to 1-based line numbers, in O(log lines)
/// each: a file of 50,000 records must not cost a scan from the start per
/// record.
#[derive(Debug, Clone)]
pub struct LineIndex(Vec<usize>);

impl LineIndex {
    /// The index of `text`'s line breaks.
    pub fn new(text: &str) -> LineIndex {
        LineIndex(text.match_indices('\n').map(|(i, _)| i).collect())
    }

    /// The 1-based line holding byte `offset` (past the end: the last).
    pub fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|&newline| newline < offset) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_fall_on_the_line_that_holds_them() {
        let text = "a = 1\nb = 2\n\nc = 3";
        let lines = LineIndex::new(text);
        for (offset, line) in [(0, 1), (5, 1), (6, 2), (12, 3), (13, 4), (17, 4), (99, 4)] {
            assert_eq!(lines.line_of(offset), line, "offset {offset}");
        }
        assert_eq!(LineIndex::new("").line_of(0), 1);
    }
}
