//! Cursor pagination over time-ordered ids: the page token is the last id of
//! the previous page.

use marketbridge_proto::common::v1::{PageRequest, PageResponse};

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: u64 = 500;

/// A page to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Items wanted.
    pub size: u64,
    /// Continue after this id.
    pub after: Option<String>,
}

impl Page {
    /// The page a request asks for.
    pub fn from_request(request: Option<&PageRequest>) -> Self {
        let size = request
            .map(|p| u64::from(p.page_size))
            .filter(|&s| s > 0)
            .unwrap_or(DEFAULT_PAGE_SIZE);
        let after = request
            .map(|p| p.page_token.clone())
            .filter(|t| !t.is_empty());
        Self {
            size: size.min(MAX_PAGE_SIZE),
            after,
        }
    }

    /// Rows to fetch: one more than the page, to know whether another follows.
    pub fn fetch_limit(&self) -> u64 {
        self.size + 1
    }

    /// Cuts the fetched rows to the page and builds the response cursor.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        id_of: impl Fn(&T) -> String,
    ) -> (Vec<T>, PageResponse) {
        let more = rows.len() as u64 > self.size;
        rows.truncate(self.size as usize);
        let next_page_token = if more {
            rows.last().map(&id_of).unwrap_or_default()
        } else {
            String::new()
        };
        (rows, PageResponse { next_page_token })
    }
}
