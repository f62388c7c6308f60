"""Synthetic datasets with a learnable signal, for demos, tests and benchmarks.

- ``ctr``: e-commerce behaviour: a user's item-id history (space separated);
  ``clicked`` (on a promotion) is 1 mostly for users whose history keeps
  returning to the promoted items (the seed's model learns it from the ids).
- ``sentiment``: Chinese finance headlines with positive/negative/neutral labels.
- ``intent``: customer-service utterances (Chinese and English) with intents.
- ``tabular``: a credit-risk table with numeric and categorical columns and a default flag.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from typing import IO

KINDS = ("ctr", "sentiment", "intent", "tabular")
CATEGORIES = 10
ITEMS_PER_CATEGORY = 30


def _category_items(category: int) -> range:
    start = 1 + category * ITEMS_PER_CATEGORY
    return range(start, start + ITEMS_PER_CATEGORY)


def ctr_rows(n: int, rng: random.Random) -> Iterator[list]:
    """Users who keep browsing the promoted items (category 0) click the promotion; 5% label noise."""
    yield ["user_id", "item_sequence", "clicked"]
    promoted = _category_items(0)
    for i in range(n):
        engaged = rng.random() < 0.5
        favourite = rng.randrange(1, CATEGORIES)
        share = 0.4 if engaged else 0.08
        history = []
        for _ in range(rng.randint(8, 40)):
            if rng.random() < share:
                history.append(rng.choice(promoted))
            else:
                category = favourite if rng.random() < 0.6 else rng.randrange(1, CATEGORIES)
                history.append(rng.choice(_category_items(category)))
        clicked = int(engaged) if rng.random() > 0.05 else int(not engaged)
        yield [f"u{i}", " ".join(map(str, history)), clicked]


_COMPANIES = ["阿里巴巴", "腾讯", "茅台", "比亚迪", "宁德时代", "招商银行", "中国平安", "京东", "美团", "小米"]
_PERIODS = ["一季度", "二季度", "上半年", "三季度", "全年", "本月"]
_POSITIVE = ["净利润大涨", "营收创新高", "股价强势上涨", "获得大额订单", "业绩超预期", "分红大幅增加"]
_NEGATIVE = ["净利润下滑", "营收不及预期", "股价大幅下跌", "遭监管处罚", "业绩亏损", "高管被调查"]
_NEUTRAL = ["召开股东大会", "发布公告", "更换审计机构", "举行业绩说明会", "完成董事会换届", "披露季度报告"]


def sentiment_rows(n: int, rng: random.Random) -> Iterator[list]:
    yield ["headline", "sentiment"]
    phrases = {"positive": _POSITIVE, "negative": _NEGATIVE, "neutral": _NEUTRAL}
    for _ in range(n):
        label = rng.choice(list(phrases))
        shown = label if rng.random() > 0.03 else rng.choice(list(phrases))
        number = rng.randint(1, 90)
        text = f"{rng.choice(_COMPANIES)}{rng.choice(_PERIODS)}{rng.choice(phrases[shown])}{number}%"
        yield [text, label]


_INTENTS = {
    "shipping": ["我的订单什么时候发货", "快递到哪里了", "where is my package", "物流怎么一直不更新", "几天能送到"],
    "refund": ["我要退款", "怎么申请退货退款", "I want my money back", "退款什么时候到账", "商品有问题要退钱"],
    "invoice": ["怎么开发票", "需要增值税专用发票", "can I get an invoice", "发票抬头填错了", "电子发票在哪里下载"],
    "account": ["登录不上账号", "忘记密码了", "how do I change my password", "手机号换了怎么办", "账号被冻结了"],
}
_POLITE = ["", "请问", "你好，", "麻烦问下，", "hi, ", "急！"]


def intent_rows(n: int, rng: random.Random) -> Iterator[list]:
    yield ["utterance", "intent"]
    for _ in range(n):
        intent = rng.choice(list(_INTENTS))
        yield [f"{rng.choice(_POLITE)}{rng.choice(_INTENTS[intent])}", intent]


def tabular_rows(n: int, rng: random.Random) -> Iterator[list]:
    yield ["age", "income", "debt_ratio", "employment", "region", "late_payments", "defaulted"]
    for _ in range(n):
        age = rng.randint(21, 70)
        employment = rng.choice(["salaried", "self_employed", "unemployed", "retired"])
        income = round(max(800.0, rng.gauss(6000 if employment != "unemployed" else 1500, 2000)), 2)
        debt_ratio = round(min(2.0, max(0.0, rng.gauss(0.35, 0.2))), 3)
        late = rng.choices([0, 1, 2, 3, 5], weights=[60, 20, 10, 6, 4])[0]
        score = -3 + 4 * debt_ratio + 0.6 * late - income / 4000 + (1.5 if employment == "unemployed" else 0)
        defaulted = int(rng.random() < 1 / (1 + math.exp(-score)))
        yield [age, income, debt_ratio, employment, rng.choice(["north", "south", "east", "west"]), late, defaulted]


GENERATORS = {"ctr": ctr_rows, "sentiment": sentiment_rows, "intent": intent_rows, "tabular": tabular_rows}
LABELS = {"ctr": "clicked", "sentiment": "sentiment", "intent": "intent", "tabular": "defaulted"}


def write_csv(kind: str, rows: int, out: IO[str], *, seed: int = 0) -> None:
    writer = csv.writer(out)
    for row in GENERATORS[kind](rows, random.Random(seed)):
        writer.writerow(row)
