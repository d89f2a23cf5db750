"""Worked examples for the teacher's mining prompts, from tasks unrelated to any user's data.

They show the abstraction (a named team becomes "a sports team", a named waiter "a member of the staff")
and the rule's shape without a template a small teacher would copy ("If <cue>, answer <label>" came back
verbatim from a 1.5B teacher). A small teacher also borrows their words ("if the review judges..." in a
StereoSet rule), so the gates refuse a rule that uses a word of theirs that no train input contains.
"""

from __future__ import annotations

import dspy

_HEADLINE = dict(task="Classify the topic of the news headline.", labels="sports, politics, business",
                 example="headline: Lakers beat Celtics 102-99 in overtime", gold_label="sports")
_REVIEW = dict(task="Decide whether the restaurant review is about the food or the service.", labels="food, service",
               example="review: Our waiter Marco forgot our order twice.", gold_label="service")
LABEL_DEMOS = [
    dspy.Example(**_HEADLINE, rationale="The Lakers and the Celtics are basketball teams, and 102-99 is a match "
                 "score. Teams and match scores belong to sports, not to politics or business.",
                 rule="If the headline names a sports team or gives a match score, answer sports."),
    dspy.Example(**_REVIEW, rationale="Marco is a waiter, a member of the staff, and forgetting an order is "
                 "something the staff did. What the staff do is service, not food.",
                 rule="If the review describes what a waiter or another member of the staff did, answer service."),
]
MISTAKE_DEMOS = [
    dspy.Example(**{**_HEADLINE, "example": "headline: Senator buys stake in the Lakers", "gold_label": "business"},
                 wrong_label="sports", rationale="The Lakers are a team, which pulled the answer to sports, but the "
                 "headline is about buying a stake, a purchase of part of a company. A deal is business.",
                 rule="If the headline is about buying, selling or owning part of a company, answer business, even "
                      "when the company is a sports team."),
    dspy.Example(**{**_REVIEW, "example": "review: The waiter brought soup that was cold and bland.",
                    "gold_label": "food"}, wrong_label="service",
                 rationale="A waiter is staff, which pulled the answer to service, but what the review judges is "
                           "the soup: cold and bland describe the dish itself.",
                 rule="If the review judges how a dish tastes or its temperature, answer food, even when a member "
                      "of the staff served it."),
]




# The words that place a rule in the worked examples' own domains (news topics, restaurant reviews).
DOMAIN_WORDS = {"headline", "headlines", "news", "sports", "sport", "team", "teams", "basketball", "match", "score",
                "scores", "overtime", "lakers", "celtics", "senator", "stake", "politics", "restaurant", "review",
                "reviews", "reviewer", "waiter", "waiters", "staff", "food", "dish", "dishes", "soup", "tastes",
                "bland", "meal", "menu"}


def vocabulary() -> set[str]:
    """The worked examples' domain words (lower case) that a rule about other data should not use."""
    return set(DOMAIN_WORDS)
