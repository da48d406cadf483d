"""Feedback fact: every rating with a sentiment and topic label read from its comment.

The label comes from a weighted keyword lexicon (delivery_lake/sentiment.py, which
documents the method and its measured accuracy); it is null when there is no comment.
Held input: feedback of a blocked raw partition is not read (the gate keeps it out);
the build manifest lists the cell in held_cells. Feedback needs no order to be labelled,
so nothing else is held back.
grain: one row per feedback_id, partitioned by submission date
partition_by: date
"""

import polars as pl

from delivery_lake.sentiment import label_comments

REFS = ["stg_customer_feedback"]
# Each output row is labelled from its own input row: on Spark the model runs on each chunk of
# rows where they are (TRANSFORM_ENGINE=spark), not once over the whole input.
ROW_WISE = True
COLUMNS = {
    "feedback_id": "Feedback key.",
    "order_id": "Order rated.",
    "client_id": "Client of the order.",
    "date": "Submission date (UTC); the partition.",
    "submitted_at": "When the feedback was left (UTC).",
    "rating": "Stars, 1 to 5.",
    "channel": "Where it was left: app, email, sms or web.",
    "comment": "Free text, trimmed; null if blank.",
    "sentiment": "positive / neutral / negative from the comment's lexicon score; null without comment.",
    "sentiment_score": "Lexicon score: positive cue weights minus negative ones (>= 2 positive, <= -2 negative).",
    "topic": "Main topic of the comment: missed_delivery, parcel_condition, punctuality, driver, tracking_communication or general.",
}


def model(ref, source) -> pl.LazyFrame:
    feedback = ref("stg_customer_feedback")
    return label_comments(feedback).select(
        "feedback_id",
        "order_id",
        "client_id",
        pl.col("submitted_date").alias("date"),
        "submitted_at",
        "rating",
        "channel",
        "comment",
        "sentiment",
        "sentiment_score",
        "topic",
    )
