//! Uniform-price clearing, shared by the market's competitive bidding
//! (whitepaper 2.2) and the epoch's GAS auction (whitepaper 6).
//!
//! Capacity goes to the highest bids; ties go to the lower key (the
//! caller's deterministic order: earlier block, earlier transaction). The
//! marginal bid may be filled in part. Every winner pays the one clearing
//! price, the lowest unit price among the bids that got anything, so a
//! bidder never pays more than it bid and bidding one's true value is safe.

/// One bid: a tie-breaking key, units wanted and the highest unit price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bid<K> {
    /// Orders bids of equal price: the lower key wins.
    pub key: K,
    /// Units wanted.
    pub qty: u64,
    /// Highest price per unit.
    pub unit_price: u128,
}

/// The outcome of a clearing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clearing {
    /// The price every winner pays per unit; `None` when nothing sold.
    pub price: Option<u128>,
    /// Units each bid got, in the order the bids were given.
    pub fills: Vec<u64>,
    /// Units sold in total (at most the capacity).
    pub sold: u64,
}

/// Clears `bids` against `capacity` units (see the module documentation).
/// Bids for zero units get nothing and do not set the price.
pub fn clear_uniform<K: Ord>(bids: &[Bid<K>], capacity: u64) -> Clearing {
    let mut order: Vec<usize> = (0..bids.len()).collect();
    order.sort_by(|&a, &b| {
        bids[b]
            .unit_price
            .cmp(&bids[a].unit_price)
            .then_with(|| bids[a].key.cmp(&bids[b].key))
    });
    let mut fills = vec![0u64; bids.len()];
    let mut left = capacity;
    let mut price = None;
    for i in order {
        if left == 0 {
            break;
        }
        let fill = bids[i].qty.min(left);
        if fill == 0 {
            continue;
        }
        fills[i] = fill;
        left -= fill;
        price = Some(bids[i].unit_price);
    }
    let sold = capacity - left;
    debug_assert_eq!(fills.iter().map(|&f| f as u128).sum::<u128>(), sold as u128);
    Clearing { price, fills, sold }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bid(key: u32, qty: u64, unit_price: u128) -> Bid<u32> {
        Bid {
            key,
            qty,
            unit_price,
        }
    }

    #[test]
    fn highest_bids_win_at_the_lowest_accepted_price() {
        let bids = [bid(0, 5, 10), bid(1, 5, 30), bid(2, 5, 20), bid(3, 5, 5)];
        let c = clear_uniform(&bids, 12);
        assert_eq!(c.fills, vec![2, 5, 5, 0]);
        assert_eq!(c.price, Some(10));
        assert_eq!(c.sold, 12);
    }

    #[test]
    fn ties_go_to_the_lower_key_and_nothing_sells_without_bids() {
        let bids = [bid(7, 3, 10), bid(2, 3, 10)];
        let c = clear_uniform(&bids, 4);
        assert_eq!(c.fills, vec![1, 3]);
        assert_eq!(c.price, Some(10));
        let none = clear_uniform::<u32>(&[], 10);
        assert_eq!((none.price, none.sold), (None, 0));
        let zero = clear_uniform(&[bid(0, 0, 99), bid(1, 1, 1)], 10);
        assert_eq!((zero.price, zero.fills), (Some(1), vec![0, 1]));
    }

    proptest! {
        #[test]
        fn clearing_is_feasible_and_uniform(
            bids in prop::collection::vec((0u64..50, 0u128..1000), 0..40),
            capacity in 0u64..500,
        ) {
            let bids: Vec<Bid<u32>> = bids
                .into_iter()
                .enumerate()
                .map(|(i, (q, p))| bid(i as u32, q, p))
                .collect();
            let c = clear_uniform(&bids, capacity);
            prop_assert!(c.sold <= capacity);
            let wanted: u64 = bids.iter().map(|b| b.qty).sum();
            prop_assert_eq!(c.sold, capacity.min(wanted));
            for (b, &f) in bids.iter().zip(&c.fills) {
                prop_assert!(f <= b.qty);
                if f > 0 {
                    // Every winner bid at least the clearing price.
                    prop_assert!(b.unit_price >= c.price.unwrap());
                } else if let Some(p) = c.price {
                    // A loser that bid above the price would have been
                    // filled first.
                    prop_assert!(b.qty == 0 || b.unit_price <= p);
                }
            }
            // Shuffling the input does not change who gets what.
            let mut rev = bids.clone();
            rev.reverse();
            let r = clear_uniform(&rev, capacity);
            let mut back = r.fills.clone();
            back.reverse();
            prop_assert_eq!(back, c.fills);
            prop_assert_eq!(r.price, c.price);
        }
    }
}
