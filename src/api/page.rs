//! `?limit=N&after=ID`: lists come a page at a time, by id, so a client can
//! walk them while they grow.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use serde::Deserialize;

use super::ApiError;

pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Only items with a larger id.
    #[serde(default)]
    pub after: u64,
}

fn default_limit() -> usize {
    100
}

impl Page {
    pub fn from_query(q: Result<Query<Page>, QueryRejection>) -> Result<Page, ApiError> {
        let Query(page) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        if page.limit == 0 || page.limit > MAX_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "limit: must be from 1 to {MAX_LIMIT}, not {}",
                page.limit
            )));
        }
        Ok(page)
    }

    /// The page of `items` (sorted by id), and the `after` of the next page
    /// when there is one.
    pub fn slice<T>(&self, items: Vec<T>, id: impl Fn(&T) -> u64) -> (Vec<T>, Option<u64>) {
        let mut rest: Vec<T> = items.into_iter().filter(|t| id(t) > self.after).collect();
        let more = rest.len() > self.limit;
        rest.truncate(self.limit);
        let next = if more { rest.last().map(&id) } else { None };
        (rest, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_the_list() {
        let p = Page { limit: 2, after: 0 };
        assert_eq!(p.slice(vec![1, 2, 3], |x| *x), (vec![1, 2], Some(2)));
        let p = Page { limit: 2, after: 2 };
        assert_eq!(p.slice(vec![1, 2, 3], |x| *x), (vec![3], None));
        let p = Page { limit: 2, after: 1 };
        assert_eq!(p.slice(vec![1, 2, 3], |x| *x), (vec![2, 3], None));
    }
}
