//! Table shapes of the KuaiRec, Taobao and TenRec presets, with their sources.
//!
//! Every entry is one embedding table: `rows` is the number of embedding rows
//! (distinct values of the categorical field, plus padding/OOV rows where the
//! cited preprocessing adds them) and `pooling` is the number of ids looked up
//! per sample (1 for a one-hot field, the mean list length for a multi-hot one;
//! the mean is rounded to the nearest integer because `pooling` is a `u32`).
//!
//! How the numbers were obtained, per preset:
//!
//! * **KuaiRec 2.0** (Gao et al., CIKM'22, <https://kuairec.com>,
//!   github.com/chongminggao/KuaiRec). User/item counts are the published
//!   big-matrix statistics (7,176 users; 10,728 videos in v2.0, which dropped
//!   the unused video 1225 from the 10,729 of v1; `item_categories.csv` and
//!   `kuairec_caption_category.csv` both have 10,728 rows). The user-profile
//!   fields are the columns of `user_features.csv` (31 columns, 7,176 rows).
//!   KuaiRec's page does not list their value sets; the same Kuaishou
//!   user-profile schema (same column names) is documented with value sets and
//!   ranges in the KuaiRand README (github.com/chongminggao/KuaiRand,
//!   "Descriptions of the fields in user_features.csv"). The `*_range` and
//!   `user_active_degree` sets are taken from there, and the `onehot_feat*`
//!   rows are KuaiRand's documented ranges: those are **estimates** (upper
//!   bounds) for KuaiRec's 7,176 users. The video tag list (`feat` in
//!   `item_categories.csv`, 31 tags, ids 0..=30) is multi-hot; its pooling
//!   (mean 1.26 tags per video, max 4) is an **estimate** measured on the
//!   first 401 rows of a public copy of `item_categories.csv`
//!   (github.com/AntitheticalElysium/KRAFT, `data/video_metadata.csv`).
//!   Item metadata with unpublished cardinalities (author_id, music_id,
//!   video_tag_id, caption categories) is left out.
//!
//! * **Taobao** = the Alibaba "Ad Display/Click Data on Taobao.com" dataset
//!   (Tianchi dataId=56: `raw_sample` + `ad_feature` + `user_profile` +
//!   `behavior_log`; ~1.14M users, 26,557,961 impressions, 846,811 ads,
//!   1,061,768 user profiles, 723,268,134 behaviours). This is the Taobao set
//!   used by DIN/DIEN/DMR and by the BARS/FuxiCTR CTR benchmark. Rows are the
//!   per-field `vocab_size` of the public BARS benchmark split TaobaoAd_x1
//!   (DMR preprocessing, `min_categr_count=10`, behaviour sequences truncated
//!   to 50), printed in the feature specs of the published run log in
//!   github.com/reczoo/BARS `ranking/ctr/DIN/DIN_taobaoad_x1/README.md`
//!   (FuxiCTR 2.0.1; each vocab includes 1 padding row and 1 OOV row). The
//!   three behaviour sequences share their table with `cate_id`, `brand` and
//!   `btag` in FuxiCTR; they are listed as their own tables here. Their
//!   pooling is 50 (the max_len): with 723,268,134 behaviours for ~1.14M users
//!   (about 633 per user over 22 days) the 50-slot window is almost always
//!   full, so 50 is derived, not measured.
//!
//! * **TenRec** (Yuan et al., NeurIPS'22 Datasets & Benchmarks,
//!   arXiv:2210.10629, github.com/yuangh-x/2022-NIPS-Tenrec). 78 tables, built
//!   by one rule applied to the four raw scenario files:
//!   1. The official CTR recipe (`utils.py::ctrdataset`, `gen_ctr.py`) uses 15
//!      single-id tables on QK-video: `user_id`, `item_id`, `video_category`
//!      (called `short_v` in the code), `gender`, `age`, `hist_1`..`hist_10`,
//!      where `hist_k` is the k-th of the user's first 10 clicked items,
//!      0-padded.
//!      Applied to QK-video and QB-video: 2 x 15 = 30 tables.
//!   2. The article files have no official CTR recipe; the same rule (every
//!      non-label column + 10 history slots) gives 14 + 10 = 24 tables each for
//!      QK-article and QB-article (their 14 shared input columns: user_id,
//!      item_id, gender, age, category_first, category_second, exposure_count,
//!      click_count, like_count, comment_count, read_percentage, item_score1,
//!      item_score2, item_score3): 48 tables.
//!   3. The six columns only QK-article has (`read, read_time, share, like,
//!      follow, favorite`) are feedback labels, not inputs, so the preset
//!      leaves them out: 78 tables, within the "up to 84" that the full field set allows.
//!
//!   Published counts: users/items per scenario (paper Table 1: QK-video
//!   5,022,750/3,753,436; QK-article 1,325,838/220,122; QB-video
//!   34,240/130,637; QB-article 24,516/7,355). `hist_k` rows = items + 1 (the
//!   0 padding id of `gen_ctr.py`). `gender` {0,1,2}, `age` {0..=7} and
//!   `video_category` {0,1,\N} are the value sets found by a full scan of the
//!   official `ctr_data_1M.csv` (120,342,306 rows; github.com/EddyHai57/
//!   tenrec-ranking `docs/data_notes.md`), assumed identical in the other
//!   files. **Derived / convention, not published**: article numeric columns
//!   (counts, percentages, scores, read_time) are bucketized into 100
//!   quantile buckets + 1 missing bucket = 101 rows; `category_first` and
//!   `category_second` (distinct counts unpublished) are hashed into 100 and
//!   1,000 buckets; binary feedback flags have 2 rows. All TenRec tables are
//!   single-id (pooling 1): the official recipe makes each history slot its
//!   own table. (Treated as one multi-hot table instead, the history has
//!   pooling 10: the ctr_data_1M scan gives a mean of 9.93 non-zero slots.)

/// One embedding table of a preset: field name, rows (distinct values), pooling factor (ids per sample).
pub(crate) struct FieldShape {
    pub name: &'static str,
    pub rows: u64,
    pub pooling: u32,
}

/// KuaiRec 2.0 (kuairec.com, github.com/chongminggao/KuaiRec): 29 tables.
/// IDs from the published big-matrix statistics, user-profile fields from
/// `user_features.csv` with value sets documented in the KuaiRand README (same
/// schema), video tags from `item_categories.csv`. See the module doc for which
/// numbers are estimates.
pub(crate) const KUAIREC: &[FieldShape] = &[
    // README statistics table, big matrix: #Users 7,176.
    FieldShape { name: "user_id", rows: 7_176, pooling: 1 },
    // README v2.0 note: video 1225 removed from the 10,729 of v1 -> 10,728
    // (item_categories.csv / kuairec_caption_category.csv have 10,728 rows).
    FieldShape { name: "video_id", rows: 10_728, pooling: 1 },
    // item_categories.csv `feat`: "#Attributes of items 31" (tag ids 0..=30);
    // multi-hot, mean 1.26 tags/video on a 401-row sample (ESTIMATE) -> 1.
    FieldShape { name: "video_tags", rows: 31, pooling: 1 },
    // user_features.csv; set {'high_active','full_active','middle_active','UNKNOWN'}
    // (KuaiRand README, same schema).
    FieldShape { name: "user_active_degree", rows: 4, pooling: 1 },
    // user_features.csv binary flags {0,1}.
    FieldShape { name: "is_lowactive_period", rows: 2, pooling: 1 },
    FieldShape { name: "is_live_streamer", rows: 2, pooling: 1 },
    FieldShape { name: "is_video_author", rows: 2, pooling: 1 },
    // Documented range sets (KuaiRand README, same schema): follow 8 ranges,
    // fans 7, friend 7, register_days 7.
    FieldShape { name: "follow_user_num_range", rows: 8, pooling: 1 },
    FieldShape { name: "fans_user_num_range", rows: 7, pooling: 1 },
    FieldShape { name: "friend_user_num_range", rows: 7, pooling: 1 },
    FieldShape { name: "register_days_range", rows: 7, pooling: 1 },
    // onehot_feat0..17: encrypted one-hot user features; rows = range size
    // documented in the KuaiRand README ({0,1}, {0..6}, {0..49}, {0..1470},
    // {0..14}, {0..33}, {0..2}, {0..117}, {0..453}, {0..6}, {0..4}, {0..4},
    // then {0,1} x 6). ESTIMATES (upper bounds) for KuaiRec's users.
    FieldShape { name: "onehot_feat0", rows: 2, pooling: 1 },
    FieldShape { name: "onehot_feat1", rows: 7, pooling: 1 },
    FieldShape { name: "onehot_feat2", rows: 50, pooling: 1 },
    FieldShape { name: "onehot_feat3", rows: 1_471, pooling: 1 },
    FieldShape { name: "onehot_feat4", rows: 15, pooling: 1 },
    FieldShape { name: "onehot_feat5", rows: 34, pooling: 1 },
    FieldShape { name: "onehot_feat6", rows: 3, pooling: 1 },
    FieldShape { name: "onehot_feat7", rows: 118, pooling: 1 },
    FieldShape { name: "onehot_feat8", rows: 454, pooling: 1 },
    FieldShape { name: "onehot_feat9", rows: 7, pooling: 1 },
    FieldShape { name: "onehot_feat10", rows: 5, pooling: 1 },
    FieldShape { name: "onehot_feat11", rows: 5, pooling: 1 },
    FieldShape { name: "onehot_feat12", rows: 2, pooling: 1 },
    FieldShape { name: "onehot_feat13", rows: 2, pooling: 1 },
    FieldShape { name: "onehot_feat14", rows: 2, pooling: 1 },
    FieldShape { name: "onehot_feat15", rows: 2, pooling: 1 },
    FieldShape { name: "onehot_feat16", rows: 2, pooling: 1 },
    FieldShape { name: "onehot_feat17", rows: 2, pooling: 1 },
];

/// Taobao = Alibaba "Ad Display/Click Data on Taobao.com" (Tianchi dataId=56,
/// raw_sample + ad_feature + user_profile + behavior_log), as preprocessed by
/// the BARS benchmark TaobaoAd_x1: 19 tables. Rows are the FuxiCTR
/// `vocab_size` printed in the published DIN_taobaoad_x1 run log
/// (github.com/reczoo/BARS, ranking/ctr/DIN/DIN_taobaoad_x1/README.md):
/// distinct values with count >= 10, plus 1 padding and 1 OOV row.
pub(crate) const TAOBAO: &[FieldShape] = &[
    // user_profile (BARS TaobaoAd_x1 feature specs).
    FieldShape { name: "userid", rows: 403_958, pooling: 1 },
    FieldShape { name: "cms_segid", rows: 99, pooling: 1 },
    FieldShape { name: "cms_group_id", rows: 15, pooling: 1 },
    FieldShape { name: "final_gender_code", rows: 4, pooling: 1 },
    FieldShape { name: "age_level", rows: 9, pooling: 1 },
    FieldShape { name: "pvalue_level", rows: 6, pooling: 1 },
    FieldShape { name: "shopping_level", rows: 5, pooling: 1 },
    FieldShape { name: "occupation", rows: 4, pooling: 1 },
    FieldShape { name: "new_user_class_level", rows: 7, pooling: 1 },
    // ad_feature (BARS TaobaoAd_x1 feature specs; cate_id and brand vocabularies
    // are shared with the behaviour-log categories/brands).
    FieldShape { name: "adgroup_id", rows: 246_851, pooling: 1 },
    FieldShape { name: "cate_id", rows: 11_330, pooling: 1 },
    FieldShape { name: "campaign_id", rows: 191_771, pooling: 1 },
    FieldShape { name: "customer", rows: 132_136, pooling: 1 },
    FieldShape { name: "brand", rows: 308_870, pooling: 1 },
    // raw_sample context: pid (2 ad slots + pad + OOV) (BARS feature specs).
    FieldShape { name: "pid", rows: 4, pooling: 1 },
    // behavior_log btag {ipv, cart, fav, buy} + pad + OOV (BARS feature specs).
    FieldShape { name: "btag", rows: 6, pooling: 1 },
    // behavior_log sequences, max_len 50 (BARS): vocab shared with cate_id,
    // brand, btag in FuxiCTR. Pooling 50 DERIVED: 723,268,134 behaviours /
    // ~1.14M users ~= 633 per user >> 50, so the window is nearly always full.
    FieldShape { name: "cate_his", rows: 11_330, pooling: 50 },
    FieldShape { name: "brand_his", rows: 308_870, pooling: 50 },
    FieldShape { name: "btag_his", rows: 6, pooling: 50 },
];

/// TenRec (Tencent, NeurIPS'22 D&B, arXiv:2210.10629,
/// github.com/yuangh-x/2022-NIPS-Tenrec): 78 single-id tables over the four raw
/// scenario files (QK-video, QB-video, QK-article, QB-article). User/item counts
/// are the paper's Table 1; small categorical value sets come from a full scan
/// of the official `ctr_data_1M.csv`; bucket/hash counts for article numeric and
/// category columns are an embtune convention (see the module doc).
pub(crate) const TENREC: &[FieldShape] = &[
    // ---- QK-video: official CTR recipe (utils.py::ctrdataset), 15 tables ----
    // Paper Table 1: QK-video #users 5,022,750, #items 3,753,436.
    FieldShape { name: "qk_video.user_id", rows: 5_022_750, pooling: 1 },
    FieldShape { name: "qk_video.item_id", rows: 3_753_436, pooling: 1 },
    // ctr_data_1M scan: video_category in {0, 1, \N}; gender {0,1,2}; age {0..7}.
    FieldShape { name: "qk_video.video_category", rows: 3, pooling: 1 },
    FieldShape { name: "qk_video.gender", rows: 3, pooling: 1 },
    FieldShape { name: "qk_video.age", rows: 8, pooling: 1 },
    // gen_ctr.py: hist_k = k-th of the user's first 10 clicked items, 0-padded
    // -> rows = #items + 1.
    FieldShape { name: "qk_video.hist_1", rows: 3_753_437, pooling: 1 },
    FieldShape { name: "qk_video.hist_2", rows: 3_753_437, pooling: 1 },
    FieldShape { name: "qk_video.hist_3", rows: 3_753_437, pooling: 1 },
    FieldShape { name: "qk_video.hist_4", rows: 3_753_437, pooling: 1 },
    FieldShape { name: "qk_video.hist_5", rows: 3_753_437, pooling: 1 },
    FieldShape { name: "qk_video.hist_6", rows: 3_753_437, pooling: 1 },
    FieldShape { name: "qk_video.hist_7", rows: 3_753_437, pooling: 1 },
    FieldShape { name: "qk_video.hist_8", rows: 3_753_437, pooling: 1 },
    FieldShape { name: "qk_video.hist_9", rows: 3_753_437, pooling: 1 },
    FieldShape { name: "qk_video.hist_10", rows: 3_753_437, pooling: 1 },
    // ---- QB-video: same recipe (same columns as QK-video), 15 tables ----
    // Paper Table 1: QB-video #users 34,240, #items 130,637.
    FieldShape { name: "qb_video.user_id", rows: 34_240, pooling: 1 },
    FieldShape { name: "qb_video.item_id", rows: 130_637, pooling: 1 },
    // Value sets as measured on ctr_data_1M (assumed identical here).
    FieldShape { name: "qb_video.video_category", rows: 3, pooling: 1 },
    FieldShape { name: "qb_video.gender", rows: 3, pooling: 1 },
    FieldShape { name: "qb_video.age", rows: 8, pooling: 1 },
    // hist_k: #items + 1 padding id (gen_ctr.py construction).
    FieldShape { name: "qb_video.hist_1", rows: 130_638, pooling: 1 },
    FieldShape { name: "qb_video.hist_2", rows: 130_638, pooling: 1 },
    FieldShape { name: "qb_video.hist_3", rows: 130_638, pooling: 1 },
    FieldShape { name: "qb_video.hist_4", rows: 130_638, pooling: 1 },
    FieldShape { name: "qb_video.hist_5", rows: 130_638, pooling: 1 },
    FieldShape { name: "qb_video.hist_6", rows: 130_638, pooling: 1 },
    FieldShape { name: "qb_video.hist_7", rows: 130_638, pooling: 1 },
    FieldShape { name: "qb_video.hist_8", rows: 130_638, pooling: 1 },
    FieldShape { name: "qb_video.hist_9", rows: 130_638, pooling: 1 },
    FieldShape { name: "qb_video.hist_10", rows: 130_638, pooling: 1 },
    // ---- QK-article: 14 input columns + 10 history slots + 6 extra = 30 ----
    // Paper Table 1: QK-article #users 1,325,838, #items 220,122.
    FieldShape { name: "qk_article.user_id", rows: 1_325_838, pooling: 1 },
    FieldShape { name: "qk_article.item_id", rows: 220_122, pooling: 1 },
    // Same user-profile encoding as the video files (ctr_data_1M scan).
    FieldShape { name: "qk_article.gender", rows: 3, pooling: 1 },
    FieldShape { name: "qk_article.age", rows: 8, pooling: 1 },
    // Distinct counts unpublished: hashed into 100 / 1,000 buckets (CONVENTION).
    FieldShape { name: "qk_article.category_first", rows: 100, pooling: 1 },
    FieldShape { name: "qk_article.category_second", rows: 1_000, pooling: 1 },
    // Numeric columns: 100 quantile buckets + 1 missing = 101 rows (CONVENTION).
    FieldShape { name: "qk_article.exposure_count", rows: 101, pooling: 1 },
    FieldShape { name: "qk_article.click_count", rows: 101, pooling: 1 },
    FieldShape { name: "qk_article.like_count", rows: 101, pooling: 1 },
    FieldShape { name: "qk_article.comment_count", rows: 101, pooling: 1 },
    FieldShape { name: "qk_article.read_percentage", rows: 101, pooling: 1 },
    FieldShape { name: "qk_article.item_score1", rows: 101, pooling: 1 },
    FieldShape { name: "qk_article.item_score2", rows: 101, pooling: 1 },
    FieldShape { name: "qk_article.item_score3", rows: 101, pooling: 1 },
    // History slots built as in gen_ctr.py: #items + 1 padding id.
    FieldShape { name: "qk_article.hist_1", rows: 220_123, pooling: 1 },
    FieldShape { name: "qk_article.hist_2", rows: 220_123, pooling: 1 },
    FieldShape { name: "qk_article.hist_3", rows: 220_123, pooling: 1 },
    FieldShape { name: "qk_article.hist_4", rows: 220_123, pooling: 1 },
    FieldShape { name: "qk_article.hist_5", rows: 220_123, pooling: 1 },
    FieldShape { name: "qk_article.hist_6", rows: 220_123, pooling: 1 },
    FieldShape { name: "qk_article.hist_7", rows: 220_123, pooling: 1 },
    FieldShape { name: "qk_article.hist_8", rows: 220_123, pooling: 1 },
    FieldShape { name: "qk_article.hist_9", rows: 220_123, pooling: 1 },
    FieldShape { name: "qk_article.hist_10", rows: 220_123, pooling: 1 },
    // ---- QB-article: 14 input columns + 10 history slots = 24 ----
    // Paper Table 1: QB-article #users 24,516, #items 7,355.
    FieldShape { name: "qb_article.user_id", rows: 24_516, pooling: 1 },
    FieldShape { name: "qb_article.item_id", rows: 7_355, pooling: 1 },
    // Same user-profile encoding as the video files (ctr_data_1M scan).
    FieldShape { name: "qb_article.gender", rows: 3, pooling: 1 },
    FieldShape { name: "qb_article.age", rows: 8, pooling: 1 },
    // Distinct counts unpublished: hashed into 100 / 1,000 buckets (CONVENTION).
    FieldShape { name: "qb_article.category_first", rows: 100, pooling: 1 },
    FieldShape { name: "qb_article.category_second", rows: 1_000, pooling: 1 },
    // Numeric columns: 100 quantile buckets + 1 missing = 101 rows (CONVENTION).
    FieldShape { name: "qb_article.exposure_count", rows: 101, pooling: 1 },
    FieldShape { name: "qb_article.click_count", rows: 101, pooling: 1 },
    FieldShape { name: "qb_article.like_count", rows: 101, pooling: 1 },
    FieldShape { name: "qb_article.comment_count", rows: 101, pooling: 1 },
    FieldShape { name: "qb_article.read_percentage", rows: 101, pooling: 1 },
    FieldShape { name: "qb_article.item_score1", rows: 101, pooling: 1 },
    FieldShape { name: "qb_article.item_score2", rows: 101, pooling: 1 },
    FieldShape { name: "qb_article.item_score3", rows: 101, pooling: 1 },
    // History slots built as in gen_ctr.py: #items + 1 padding id.
    FieldShape { name: "qb_article.hist_1", rows: 7_356, pooling: 1 },
    FieldShape { name: "qb_article.hist_2", rows: 7_356, pooling: 1 },
    FieldShape { name: "qb_article.hist_3", rows: 7_356, pooling: 1 },
    FieldShape { name: "qb_article.hist_4", rows: 7_356, pooling: 1 },
    FieldShape { name: "qb_article.hist_5", rows: 7_356, pooling: 1 },
    FieldShape { name: "qb_article.hist_6", rows: 7_356, pooling: 1 },
    FieldShape { name: "qb_article.hist_7", rows: 7_356, pooling: 1 },
    FieldShape { name: "qb_article.hist_8", rows: 7_356, pooling: 1 },
    FieldShape { name: "qb_article.hist_9", rows: 7_356, pooling: 1 },
    FieldShape { name: "qb_article.hist_10", rows: 7_356, pooling: 1 },
];

// Table counts promised by the docs above; a mismatch fails the build.
const _: () = assert!(KUAIREC.len() == 29);
const _: () = assert!(TAOBAO.len() == 19);
const _: () = assert!(TENREC.len() == 78);

/// The shape of one of Meta's synthetic DLRM data sets (`dlrm-2021`, `dlrm-2022`).
///
/// Sources, and what is published versus assumed:
///
/// * **Table count and batch size: published.** github.com/facebookresearch/dlrm_datasets,
///   README "Usage": each file is one batch, named by its table count and batch size;
///   `embedding_bag/2021/fbgemm_t856_bs65536.pt.gz` is "a single batch of 65536 samples for
///   856 tables". The 2022 release in the same repository is `fbgemm_t788_bs131072`: 788
///   tables, batch 131,072 (the figures quoted by embtune issue 19 from that repository).
/// * **Reuse: published as histograms.** The README's "Reuse pattern" section gives, for the
///   2021 data, the share of unique indices by reuse factor; the bin (0, 1] (touched once in
///   the batch) holds 0.069 of them, and about 42% of them are reused more than 64 times.
///   For 2022 the share touched once is 34% (issue 19, from the same repository). The data
///   is post-hashed and de-identified (README, "Source data"), so there is no per-row
///   identity to copy: the presets draw ids from a Zipf law with hot rows scattered, 2021 with
///   exponent 1.2 and 2022 with 0.95, one exponent for every table of a preset. **Assumed, and
///   not yet matched to the published reuse**: measured on every 80th table at the published
///   batch sizes, the share of a batch's distinct ids that it touches once is 64% for
///   `dlrm-2021` (published: 6.9%) and 51% for `dlrm-2022` (published: 34%). The large tables
///   (millions of rows against a few hundred thousand ids a batch) are what keep the share
///   high; matching it needs per-table exponents or smaller large tables, calibrated against
///   the histograms.
/// * **Rows per table: not published; assumed.** The files hold ids only; DreamShard
///   (Zha et al., NeurIPS 2022; github.com/daochenzha/dreamshard `tools/gen_dlrm_data.py`),
///   which plans on the 2021 file, takes a table's rows as its largest id + 1, at least
///   100. The presets keep that floor of 100 rows and spread the tables' rows log-uniformly
///   up to 10M (2021) and 20M (2022) rows, each table's size drawn from a seeded stream so
///   big and small tables interleave as in the files. The 10M and 20M ceilings are
///   **assumptions** of the order of Meta's post-hash table sizes, not figures from the data.
/// * **Pooling: published only as a rough mean.** The lengths vectors "align closely with
///   values arising in production" (README); issue 19 gives a mean pooling of roughly 8 to
///   16 over the two files. **Assumed**: the 2021 preset's mean is 8 and the 2022 preset's
///   16, each table's bag length Poisson with a mean drawn log-uniformly from 1 to a ceiling
///   chosen so that the tables' average is that mean (most tables short, a few long, as
///   DreamShard's per-table pooling factors show for the 2021 file).
/// * **Dim: not in the data; assumed 16**, DreamShard's default (`--dim 16`) for this data.
pub(crate) struct DlrmShape {
    pub tables: usize,
    pub batch: u32,
    pub max_rows: u64,
    pub mean_pooling: f64,
    pub zipf: f64,
    pub seed: u64,
}

/// The smallest table, as DreamShard's processing of the 2021 file floors it.
pub(crate) const DLRM_MIN_ROWS: u64 = 100;

/// 2021: 856 tables, batch 65,536 (`fbgemm_t856_bs65536`).
pub(crate) const DLRM_2021: DlrmShape =
    DlrmShape { tables: 856, batch: 65_536, max_rows: 10_000_000, mean_pooling: 8.0, zipf: 1.2, seed: 2021 };

/// 2022: 788 tables, batch 131,072 (`fbgemm_t788_bs131072`).
pub(crate) const DLRM_2022: DlrmShape =
    DlrmShape { tables: 788, batch: 131_072, max_rows: 20_000_000, mean_pooling: 16.0, zipf: 0.95, seed: 2022 };

impl DlrmShape {
    /// Each table's rows and mean pooling, drawn from a stream seeded by the preset so that the
    /// shape is the same on every machine.
    pub fn tables(&self) -> Vec<(u64, f64)> {
        let mut rng = crate::rng::StreamRng::new(self.seed, 0xd1_2a, 0);
        let span = (self.max_rows as f64 / DLRM_MIN_ROWS as f64).ln();
        let ceiling = pooling_ceiling(self.mean_pooling);
        let raw: Vec<(u64, f64)> = (0..self.tables)
            .map(|_| {
                let rows = (DLRM_MIN_ROWS as f64 * libm::exp(rng.unit() * span)).round() as u64;
                let pool = libm::exp(rng.unit() * libm::log(ceiling));
                (rows, pool)
            })
            .collect();
        // Rescale the drawn means so that the tables' average is the target exactly, then round
        // to a tenth (a model file prints them; short decimals read better).
        let drawn = raw.iter().map(|r| r.1).sum::<f64>() / raw.len() as f64;
        raw.into_iter()
            .map(|(rows, p)| (rows, ((p * self.mean_pooling / drawn * 10.0).round() / 10.0).max(1.0)))
            .collect()
    }
}

/// The ceiling `m` of a log-uniform law on `[1, m]` whose mean `(m - 1) / ln m` is `mean`,
/// by bisection (the mean grows with `m`).
fn pooling_ceiling(mean: f64) -> f64 {
    let (mut lo, mut hi) = (1.0 + 1e-9, 1e6);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if (mid - 1.0) / libm::log(mid) < mean { lo = mid } else { hi = mid }
    }
    lo
}
