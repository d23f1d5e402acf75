//! A reconcile's items by entry id: sorted when built, found by binary
//! search (a list of 100,000 entries' items needs no map of every id, and
//! no search can run on an order it was not sorted in).

/// Items keyed by entry id, sorted by it.
#[derive(Debug)]
pub(super) struct ById<T> {
    items: Vec<(u32, T)>,
}

impl<T> ById<T> {
    /// `items` in any order (sorted here).
    pub(super) fn new(mut items: Vec<(u32, T)>) -> Self {
        items.sort_unstable_by_key(|(id, _)| *id);
        Self { items }
    }

    /// The item of `id` (one of them if `id` was given twice).
    pub(super) fn get(&self, id: u32) -> Option<&T> {
        let at = self.items.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        self.items.get(at).map(|(_, item)| item)
    }

    /// Every item with its id, by id.
    pub(super) fn iter(&self) -> impl Iterator<Item = &(u32, T)> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_is_found_whatever_order_the_items_came_in() {
        // new ids after old pending ones, and a pod's pending ids appended
        // in a hash map's order: never sorted as given
        let given = [40u32, 7, 1000, 3, 999, 8, 41, 1, 500];
        let by_id = ById::new(given.iter().map(|&id| (id, id * 2)).collect());
        for id in given {
            assert_eq!(
                by_id.get(id),
                Some(&(id * 2)),
                "id {id} found with its item"
            );
        }
        for absent in [0, 2, 9, 501, 1001, u32::MAX] {
            assert_eq!(by_id.get(absent), None, "id {absent} was never given");
        }
        let order: Vec<u32> = by_id.iter().map(|(id, _)| *id).collect();
        assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "iterated by id: {order:?}"
        );
    }
}
