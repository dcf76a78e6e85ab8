//! A memory of value sequences: how novel is the latest point, given the
//! ones before it?
//!
//! The method is Mikhail Smirnov's Contextual Anomaly Detector (CAD OSE, one
//! of the best published detectors on NAB). This is an independent
//! implementation of it, with one change: the published detector is given
//! the minimum and maximum of the whole series in advance, which a stream
//! cannot know, so here the range is the one seen so far, and the memory is
//! relearned from its history when the range grows (if `relearn_gap` is
//! set, at most once in `relearn_gap + 1` points, so that a growing series
//! cannot make every point replay the whole history).
//!
//! - **Facts.** Each value is quantised into `2^bits` levels of the range,
//!   and each bit of its level is a fact.
//! - **Contexts.** A context pairs the facts of one step (its *left* side:
//!   the value's facts and the contexts that were active) with the facts of
//!   the next value (its *right* side). Every pair of consecutive steps is
//!   remembered, and so are the overlaps of a remembered context with what
//!   actually came next: that is how the memory generalises.
//! - **Novelty.** A value the memory predicted scores 0. Otherwise its score
//!   is high when few of the contexts whose left side matched saw it coming,
//!   and when many of the overlaps it forms are new.
//! - **Rest.** After a score of at least `alarm`, the next `rest` points
//!   score 0: one anomaly, one alarm.

use std::collections::{HashMap, VecDeque};

/// The sequence memory's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceConfig {
    /// Bits per value: `2^bits` levels over the range (1 to 16).
    pub bits: u32,
    /// A value beyond the range by more than this many levels grows the
    /// range (and the memory is relearned); a value closer is taken as the
    /// nearest level.
    pub margin_levels: f64,
    /// The most values kept, and relearned when the range grows. A
    /// relearn replays all of them.
    pub history: usize,
    /// The fewest points between two relearns for a growing range. A value
    /// beyond the range sooner is taken as the nearest end level, and the
    /// range takes it in at the first point the gap allows. A series whose
    /// range grows at every step (exponential growth) then replays at most
    /// `history / relearn_gap` values per point on average, not `history`.
    /// A relearn because the memory is full restarts the gap too.
    /// 0 (the default) relearns at every growth: a gap delays the novelty
    /// of a slow climb past the alarm's rest, one more alarm (see
    /// docs/BENCHMARKS.md, `cargo bench --bench memory`).
    pub relearn_gap: usize,
    /// The most contexts remembered. Each step costs time in proportion to
    /// the contexts its facts touch (about 4 ms at 90,000 on noise); past
    /// this, the older half of the history is forgotten and the memory
    /// relearned from the rest, so the history then refills one value per
    /// point.
    pub max_contexts: usize,
    /// The most facts on the left side of a context learned from an overlap.
    pub max_left_facts: usize,
    /// The most contexts that stay active (and become facts) after a step.
    pub max_active: usize,
    /// A score at least this high is followed by `rest` points of 0 (and so
    /// are the first `rest` points: nothing is known yet).
    pub alarm: f64,
    pub rest: usize,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        SequenceConfig {
            bits: 3,
            margin_levels: 0.25,
            history: 20_000,
            relearn_gap: 0,
            max_contexts: 200_000,
            max_left_facts: 7,
            max_active: 15,
            alarm: 0.75,
            rest: 50,
        }
    }
}

/// A fact that stands for an active context.
const CONTEXT_FACT: u32 = 1 << 31;

/// A side of contexts: the fact sets seen on it, and which contain each fact.
#[derive(Default)]
struct Side {
    ids: HashMap<Vec<u32>, usize>,
    sets: Vec<FactSet>,
    by_fact: HashMap<u32, Vec<usize>>,
    /// Sets that share a fact with the latest crossing.
    crossed: Vec<usize>,
}

#[derive(Default)]
struct FactSet {
    facts: Vec<u32>,
    /// The facts of the latest crossing that are in this set.
    shared: Vec<u32>,
    /// Left sets only: the context made with each right set.
    contexts: Vec<(usize, usize)>,
    by_right: HashMap<usize, usize>,
}

impl Side {
    /// The id of `facts`, added if new.
    fn id(&mut self, facts: &[u32]) -> usize {
        if let Some(id) = self.ids.get(facts) {
            return *id;
        }
        let id = self.sets.len();
        self.ids.insert(facts.to_vec(), id);
        self.sets.push(FactSet {
            facts: facts.to_vec(),
            ..FactSet::default()
        });
        for fact in facts {
            self.by_fact.entry(*fact).or_default().push(id);
        }
        id
    }

    /// Records which facts of `facts` each set holds.
    fn cross(&mut self, facts: &[u32]) {
        for id in self.crossed.drain(..) {
            self.sets[id].shared.clear();
        }
        for fact in facts {
            for id in self.by_fact.get(fact).into_iter().flatten() {
                let set = &mut self.sets[*id];
                if set.shared.is_empty() {
                    self.crossed.push(*id);
                }
                set.shared.push(*fact);
            }
        }
    }
}

struct Context {
    /// Right-side facts expected while its left side fully matched, and of
    /// those, the ones that came.
    expected: u64,
    came: u64,
    /// Times it fully matched.
    activations: u64,
    right: usize,
    /// Made from two consecutive steps (not from an overlap).
    consecutive: bool,
}

/// Scores values by their novelty; see the module documentation.
pub struct SequenceMemory {
    config: SequenceConfig,
    /// The range the levels divide; it only grows.
    range: Option<(f64, f64)>,
    /// The values learned, relearned when the range grows.
    history: VecDeque<f64>,
    /// The values beyond the range since the last relearn, as a range.
    beyond: Option<(f64, f64)>,
    /// Points since the last relearn.
    since_relearn: usize,
    memory: Memory,
    /// Raw scores of the last `rest` points.
    recent: VecDeque<f64>,
}

impl SequenceMemory {
    pub fn new(mut config: SequenceConfig) -> SequenceMemory {
        config.bits = config.bits.clamp(1, 16);
        // Context facts are numbered from 2^31 up.
        config.max_contexts = config.max_contexts.clamp(1, 1 << 30);
        // Negative or NaN: grow the range with any value beyond it.
        if config.margin_levels.is_nan() || config.margin_levels < 0.0 {
            config.margin_levels = 0.0;
        }
        SequenceMemory {
            range: None,
            history: VecDeque::new(),
            beyond: None,
            since_relearn: usize::MAX,
            memory: Memory::default(),
            recent: VecDeque::from([1.0]),
            config,
        }
    }

    /// Scores the next value (in [0, 1]); a non-finite value scores 0 and
    /// is not learned.
    pub fn push(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let (low, high) = *self.range.get_or_insert((value, value));
        let margin = self.config.margin_levels * self.half_width() * 2.0;
        if value < low - margin || value > high + margin {
            let (beyond_low, beyond_high) = self.beyond.unwrap_or((value, value));
            self.beyond = Some((beyond_low.min(value), beyond_high.max(value)));
        }
        self.since_relearn = self.since_relearn.saturating_add(1);
        let grow = self.beyond.is_some() && self.since_relearn > self.config.relearn_gap;
        let full = self.memory.contexts.len() >= self.config.max_contexts;
        if full {
            // Forget the older half, so relearning makes room.
            self.history.drain(..self.history.len() / 2);
        }
        if grow {
            if let Some((beyond_low, beyond_high)) = self.beyond.take() {
                self.range = Some((low.min(beyond_low), high.max(beyond_high)));
            }
        }
        if full || grow {
            self.relearn();
            self.since_relearn = 0;
        }
        let facts = self.facts(value);
        let (unpredicted, active, added) = self.memory.step(&facts, &self.config);
        self.history.push_back(value);
        if self.history.len() > self.config.history {
            self.history.pop_front();
        }
        let raw = if unpredicted { (1.0 - active + added) / 2.0 } else { 0.0 };
        let resting = self.recent.iter().any(|s| *s >= self.config.alarm);
        self.recent.push_back(raw);
        while self.recent.len() > self.config.rest {
            self.recent.pop_front();
        }
        if resting {
            0.0
        } else {
            raw
        }
    }

    /// The contexts learned so far.
    pub fn contexts(&self) -> usize {
        self.memory.contexts.len()
    }

    /// A new memory that has learned the history with the current range.
    fn relearn(&mut self) {
        self.memory = Memory::default();
        for value in &self.history {
            let facts = self.facts(*value);
            self.memory.step(&facts, &self.config);
        }
    }

    /// The highest level.
    fn top(&self) -> f64 {
        f64::from((1u32 << self.config.bits) - 1)
    }

    /// Half the width of a level. Halves: the difference of two finite
    /// values may not be finite.
    fn half_width(&self) -> f64 {
        self.range
            .map_or(0.0, |(low, high)| (high / 2.0 - low / 2.0) / self.top())
    }

    /// The facts of a value, sorted: bit `b` of its level is fact `2b` or `2b + 1`.
    fn facts(&self, value: f64) -> Vec<u32> {
        let low = self.range.map_or(value, |(low, _)| low);
        let half_width = self.half_width();
        let level = if half_width > 0.0 {
            ((value / 2.0 - low / 2.0) / half_width).floor().clamp(0.0, self.top()) as u32
        } else {
            0
        };
        (0..self.config.bits)
            .map(|bit| 2 * bit + ((level >> bit) & 1))
            .collect()
    }
}

/// The contexts learned, and what they predict.
#[derive(Default)]
struct Memory {
    left: Side,
    right: Side,
    contexts: Vec<Context>,
    /// The context made from the latest two steps, if it was new.
    newest: Option<usize>,
    /// The left side of the latest step.
    last_facts: Vec<u32>,
    predicted: Vec<u32>,
}

impl Memory {
    /// One step of the memory with the facts of the new value: returns
    /// whether any fact was not predicted, the share of fully matched
    /// contexts that are active, and the share of new overlaps that were
    /// added.
    fn step(&mut self, facts: &[u32], config: &SequenceConfig) -> (bool, f64, f64) {
        let unpredicted = facts.iter().any(|f| !self.predicted.contains(f));
        let mut candidates: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
        // The pair of the latest two steps (the left side is set anew below).
        let last = std::mem::take(&mut self.last_facts);
        let consecutive_is_new = !last.is_empty() && self.remember(&last, facts, true);
        if !last.is_empty() {
            candidates.push((last, facts.to_vec()));
        }

        // The right side: which contexts saw this value coming.
        self.right.cross(facts);
        let mut active: Vec<usize> = Vec::new();
        let mut selected = 0usize;
        let mut overlaps: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
        for &left_id in &self.left.crossed {
            let left = &self.left.sets[left_id];
            let full = left.shared.len() == left.facts.len();
            for &(right_id, context_id) in &left.contexts {
                if Some(context_id) == self.newest {
                    continue;
                }
                let right = &self.right.sets[right_id];
                let arrived = right.shared.len();
                let context = &mut self.contexts[context_id];
                let learnable = context.consecutive
                    && consecutive_is_new
                    && arrived > 0
                    && left.shared.len() <= config.max_left_facts;
                if full {
                    selected += 1;
                    context.expected += right.facts.len() as u64;
                    if arrived == 0 {
                        continue;
                    }
                    context.came += arrived as u64;
                    if arrived == right.facts.len() {
                        context.activations += 1;
                        active.push(context_id);
                        continue;
                    }
                }
                if learnable {
                    overlaps.push((left.shared.clone(), right.shared.clone()));
                }
            }
        }
        self.newest = None;
        let share_active = if selected > 0 {
            active.len() as f64 / selected as f64
        } else {
            0.0
        };

        // The most used active contexts (the newest among equals) become
        // facts of the next left side.
        active.sort_by_key(|id| std::cmp::Reverse((self.contexts[*id].activations, *id)));
        active.truncate(config.max_active);
        let mut left_facts: Vec<u32> = facts.to_vec();
        left_facts.extend(active.iter().map(|id| CONTEXT_FACT + *id as u32));
        left_facts.sort_unstable();
        left_facts.dedup();

        // Learn the overlaps, then predict the next value from the contexts
        // whose left side fully matches and that predicted best so far.
        let mut added = usize::from(consecutive_is_new);
        for (left, right) in &overlaps {
            added += usize::from(self.remember(left, right, false));
        }
        candidates.extend(overlaps);
        candidates.sort_unstable();
        candidates.dedup();
        let share_added = if consecutive_is_new {
            added as f64 / candidates.len() as f64
        } else {
            0.0
        };
        self.left.cross(&left_facts);
        let mut best = 0.0;
        let mut predicting: Vec<usize> = Vec::new();
        for &left_id in &self.left.crossed {
            let left = &self.left.sets[left_id];
            if left.shared.len() != left.facts.len() {
                continue;
            }
            for &(_, context_id) in &left.contexts {
                let context = &self.contexts[context_id];
                let weight = if context.expected > 0 {
                    context.came as f64 / context.expected as f64
                } else {
                    0.0
                };
                if weight > best {
                    best = weight;
                    predicting.clear();
                }
                if weight == best {
                    predicting.push(context.right);
                }
            }
        }
        self.predicted.clear();
        for right in predicting {
            self.predicted.extend_from_slice(&self.right.sets[right].facts);
        }
        self.predicted.sort_unstable();
        self.predicted.dedup();
        self.last_facts = left_facts;
        (unpredicted, share_active, share_added)
    }

    /// Remembers the context `left → right`; true when it is new. A
    /// consecutive one that is new becomes [`Self::newest`].
    fn remember(&mut self, left: &[u32], right: &[u32], consecutive: bool) -> bool {
        let left_id = self.left.id(left);
        let right_id = self.right.id(right);
        let next = self.contexts.len();
        let set = &mut self.left.sets[left_id];
        let id = *set.by_right.entry(right_id).or_insert(next);
        if id == next {
            set.contexts.push((right_id, id));
            self.contexts.push(Context {
                expected: 0,
                came: 0,
                activations: 0,
                right: right_id,
                consecutive,
            });
            if consecutive {
                self.newest = Some(id);
            }
            true
        } else {
            self.contexts[id].consecutive |= consecutive;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> SequenceMemory {
        SequenceMemory::new(SequenceConfig::default())
    }

    /// A rhythm of four levels, then a break that stays inside the range:
    /// learned, the rhythm scores nothing; the break scores an alarm.
    #[test]
    fn a_learned_rhythm_is_quiet_and_its_break_is_not() {
        let rhythm = [0.0, 10.0, 5.0, 10.0, 0.0, 2.0];
        let mut memory = memory();
        let mut scores = Vec::new();
        for i in 0..600 {
            scores.push(memory.push(rhythm[i % rhythm.len()]));
        }
        assert!(
            scores[300..].iter().all(|s| *s == 0.0),
            "learned rhythm scored {:?}",
            &scores[300..]
        );
        // 5 was always followed by 10, and 2 by 0.
        let broken = [0.0, 10.0, 5.0, 2.0, 5.0];
        let after: Vec<f64> = broken.iter().map(|v| memory.push(*v)).collect();
        assert!(after.iter().any(|s| *s >= 0.75), "break scored {after:?}");
    }

    /// A point scores 0 exactly when a raw score of the `rest` points
    /// before it reached the alarm (the first `rest` points count an alarm
    /// before the start); otherwise it scores its raw score.
    #[test]
    fn an_alarm_is_followed_by_rest() {
        let rest = 5;
        let resting = SequenceConfig {
            rest,
            ..SequenceConfig::default()
        };
        // The same memory, never resting: its scores are the raw ones.
        let never = SequenceConfig {
            alarm: f64::INFINITY,
            ..resting.clone()
        };
        let (mut memory, mut twin) = (SequenceMemory::new(resting), SequenceMemory::new(never));
        let rhythm = [0.0, 10.0, 5.0, 10.0, 0.0, 2.0];
        let mut values: Vec<f64> = (0..300).map(|i| rhythm[i % rhythm.len()]).collect();
        // New extremes: alone, two within `rest` of each other, and one `rest + 1` after.
        for (at, extreme) in [(100, 1e3), (150, 1e4), (153, 1e5), (200, 1e6), (206, 1e7)] {
            values[at] = extreme;
        }
        let scored: Vec<f64> = values.iter().map(|v| memory.push(*v)).collect();
        let raw: Vec<f64> = values.iter().map(|v| twin.push(*v)).collect();
        let alarms = raw.iter().filter(|r| **r >= 0.75).count();
        assert!(alarms >= 5, "{alarms} raw alarms");
        for t in 0..values.len() {
            let before = &raw[t.saturating_sub(rest)..t];
            let resting = t < rest || before.iter().any(|r| *r >= 0.75);
            let expected = if resting { 0.0 } else { raw[t] };
            assert_eq!(scored[t], expected, "point {t}: raw before {before:?}");
        }
        assert!(scored[100] >= 0.75 && scored[153] == 0.0 && raw[153] >= 0.75);
    }

    /// The facts of levels 0 (`000`) and 7 (`111`): no fact in common.
    const LOW: [u32; 3] = [0, 2, 4];
    const HIGH: [u32; 3] = [1, 3, 5];

    /// A value that never followed the state before it: no context saw it
    /// coming (the context just made from it does not count), and the one
    /// new pair is all there is to add.
    #[test]
    fn a_new_successor_of_a_known_state_is_wholly_new() {
        let config = SequenceConfig::default();
        let mut memory = Memory::default();
        for _ in 0..50 {
            memory.step(&LOW, &config);
            memory.step(&HIGH, &config);
        }
        // Low after high is known: predicted, and nothing new.
        let (unpredicted, _, added) = memory.step(&LOW, &config);
        assert!(!unpredicted && added == 0.0);
        // Low after low never came before.
        let (unpredicted, active, added) = memory.step(&LOW, &config);
        assert!(unpredicted);
        assert_eq!((active, added), (0.0, 1.0));
    }

    /// Once a rhythm is learned, repeating it is predicted at every step
    /// and adds no context: the memory stops growing.
    #[test]
    fn a_learned_rhythm_adds_no_contexts() {
        let config = SequenceConfig::default();
        let mut memory = Memory::default();
        let rhythm: [&[u32]; 4] = [&LOW, &[0, 3, 4], &HIGH, &[1, 2, 5]];
        for _ in 0..100 {
            for facts in rhythm {
                memory.step(facts, &config);
            }
        }
        let learned = memory.contexts.len();
        for _ in 0..20 {
            for facts in rhythm {
                let (unpredicted, _, added) = memory.step(facts, &config);
                assert!(!unpredicted && added == 0.0);
            }
        }
        assert_eq!(memory.contexts.len(), learned);
    }

    /// A value far beyond the range seen so far is new: it grows the range
    /// and scores an alarm, even after a long steady stretch.
    #[test]
    fn a_new_extreme_alarms() {
        let mut memory = memory();
        for i in 0..2000 {
            memory.push(f64::from(i % 7));
        }
        assert!(memory.push(1000.0) >= 0.75);
        assert_eq!(memory.range, Some((0.0, 1000.0)));
    }

    /// A range that keeps growing grows (and is relearned) at most once in
    /// `relearn_gap + 1` points, then takes in every value beyond it since,
    /// on either side; with no gap it grows with every such value.
    #[test]
    fn a_growing_range_is_relearned_at_most_once_per_gap_and_point() {
        let ranges = |gap: usize, values: &[f64]| {
            let mut memory = SequenceMemory::new(SequenceConfig {
                relearn_gap: gap,
                margin_levels: 0.0,
                ..SequenceConfig::default()
            });
            values
                .iter()
                .map(|v| {
                    memory.push(*v);
                    // The range, and whether the memory was relearned at this point.
                    (memory.range.unwrap(), memory.since_relearn == 0)
                })
                .collect::<Vec<_>>()
        };
        let values = [0.0, 1.0, 2.0, -3.0, 4.0, 5.0, 6.0];
        let kept = |range| (range, false);
        let relearned = |range| (range, true);
        assert_eq!(
            ranges(3, &values),
            [
                kept((0.0, 0.0)),
                relearned((0.0, 1.0)),
                kept((0.0, 1.0)),
                kept((0.0, 1.0)),
                kept((0.0, 1.0)),
                relearned((-3.0, 5.0)),
                kept((-3.0, 5.0))
            ]
        );
        assert_eq!(
            ranges(0, &values),
            [
                kept((0.0, 0.0)),
                relearned((0.0, 1.0)),
                relearned((0.0, 2.0)),
                relearned((-3.0, 2.0)),
                relearned((-3.0, 4.0)),
                relearned((-3.0, 5.0)),
                relearned((-3.0, 6.0))
            ]
        );
    }

    /// The memory is bounded: past `max_contexts`, it is relearned from the
    /// newer half of its history, which is bounded too.
    #[test]
    fn memory_stays_bounded() {
        let config = SequenceConfig {
            history: 200,
            max_contexts: 2000,
            ..SequenceConfig::default()
        };
        let mut memory = SequenceMemory::new(config);
        let mut most = 0;
        for i in 0u32..5000 {
            let x = i.wrapping_mul(2_654_435_761) >> 7;
            memory.push(f64::from(x % 1000));
            most = most.max(memory.memory.contexts.len());
            assert!(memory.history.len() <= 200);
        }
        // One step adds a few dozen contexts at most.
        assert!(most > 1000 && most <= 2000 + 100, "{most} contexts");
    }

    #[test]
    fn constant_broken_and_huge_values_score_in_range() {
        let mut memory = memory();
        let mut scores = Vec::new();
        for i in 0..300 {
            scores.push(memory.push(4.0));
            if i % 50 == 0 {
                scores.push(memory.push(f64::NAN));
                scores.push(memory.push(f64::INFINITY));
            }
        }
        assert!(scores.iter().all(|s| *s == 0.0), "constant scored {scores:?}");
        for value in [f64::MAX, -f64::MAX, 1e300, 0.0, f64::MIN_POSITIVE] {
            let score = memory.push(value);
            assert!((0.0..=1.0).contains(&score), "{value} scored {score}");
        }
        assert_eq!(memory.range, Some((-f64::MAX, f64::MAX)));
    }
}
