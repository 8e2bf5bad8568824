//! The app's status and response headers, as `start_response` received them.

/// The app's status and response headers, kept in two reusable buffers: no allocation
/// per header (the runtime hands the same buffers to every request's `start_response`).
#[derive(Debug, Default)]
pub struct AppHead {
    status: String,
    has_status: bool,
    text: String,
    /// Per header, where its name and its value end in `text`.
    ends: Vec<(usize, usize)>,
}

impl AppHead {
    /// The status given to `start_response`, if it was called.
    pub fn status(&self) -> Option<&str> {
        self.has_status.then_some(self.status.as_str())
    }

    pub fn set_status(&mut self, status: &str) {
        self.status.clear();
        self.status.push_str(status);
        self.has_status = true;
    }

    pub fn clear_headers(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    pub fn push_header(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len()));
    }

    /// The headers as `(name, value)`, in the app's order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let pair = (&self.text[start..name_end], &self.text[name_end..value_end]);
            start = value_end;
            pair
        })
    }

    /// Empties both buffers, keeping their capacity unless one app's huge header list grew
    /// them (a reused AppHead would hold that memory for good).
    pub fn clear(&mut self) {
        const KEEP_BYTES: usize = 64 * 1024;
        if self.text.capacity() > KEEP_BYTES || self.ends.capacity() > KEEP_BYTES / 16 {
            *self = AppHead::default();
            return;
        }
        self.status.clear();
        self.has_status = false;
        self.clear_headers();
    }

    /// Calls `f` with the headers as a slice of pairs, built on the stack when there are
    /// not many (the head encoder wants a slice).
    pub fn with_pairs<R>(&self, f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
        const ON_STACK: usize = 32;
        if self.ends.len() <= ON_STACK {
            let mut stack = [("", ""); ON_STACK];
            for (slot, pair) in stack.iter_mut().zip(self.headers()) {
                *slot = pair;
            }
            f(&stack[..self.ends.len()])
        } else {
            f(&self.headers().collect::<Vec<_>>())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AppHead;

    #[test]
    fn app_head_keeps_headers_in_order_and_lets_go_of_a_huge_list() {
        let mut head = AppHead::default();
        assert_eq!(head.status(), None);
        head.set_status("200 OK");
        head.push_header("Content-Type", "text/plain");
        head.push_header("X-Empty", "");
        head.push_header("Set-Cookie", "a=1");
        let pairs: Vec<_> = head.headers().collect();
        assert_eq!(
            pairs,
            [
                ("Content-Type", "text/plain"),
                ("X-Empty", ""),
                ("Set-Cookie", "a=1")
            ]
        );
        assert_eq!(head.status(), Some("200 OK"));
        let seen = head.with_pairs(|p| p.to_vec().len());
        assert_eq!(seen, 3);

        head.clear();
        assert_eq!((head.status(), head.headers().count()), (None, 0));
        assert!(head.text.capacity() > 0, "a small list's buffer is kept");

        for i in 0..40 {
            head.push_header(&format!("X-{i}"), &"v".repeat(4096));
        }
        assert_eq!(head.with_pairs(|p| p.len()), 40);
        head.clear();
        assert_eq!(head.text.capacity(), 0, "a huge list's buffer is let go");
    }
}
