"""Built-in sentences the export checks every variant on.

They cover what Chinese semantic-matching services actually see: short queries, dialogue turns,
paragraphs longer than ``max_seq_length``, full-width punctuation, emoji, digits, mixed Chinese and
English, whitespace and the empty string.
"""

from __future__ import annotations

_QUERIES = [
    "花呗怎么还款",
    "借呗额度为什么降低了",
    "我的快递到哪了",
    "如何修改绑定的手机号",
    "信用卡逾期一天有影响吗",
    "今天北京天气怎么样",
    "附近有什么好吃的川菜馆",
    "怎么申请退款",
    "账户被冻结了怎么办",
    "手机充值没有到账",
    "这个商品支持七天无理由退货吗",
    "什么时候发货",
]

_DIALOGUE = [
    "你好，请问有什么可以帮您？",
    "我想问一下，昨天下的订单能不能改地址？",
    "可以的，请提供一下您的订单号。",
    "订单号是20231115008836，麻烦尽快处理，谢谢！",
    "好的，已经帮您修改成功了😊",
    "嗯嗯，那大概几天能到呢？",
    "一般3到5个工作日，偏远地区可能会久一点哦～",
    "太好了！！！感谢🙏",
    "不客气～还有其他问题吗？",
    "没有了，拜拜👋",
]

_MIXED = [
    "iPhone 15 Pro Max 的电池续航怎么样？",
    "用Python写一个快速排序",
    "我在用 Windows 11，打不开 Excel 文件",
    "请把 API key 发给我，谢谢",
    "GPT-4和BERT有什么区别",
    "北京到上海的高铁G2次几点发车",
    "价格：¥1,299.00（含税）",
    "温度 36.5℃，湿度 80%",
    "电话：400-800-8888；邮箱：help@example.com",
    "Hello world! 你好世界！",
    "ＡＢＣ１２３全角字母和数字",
    "【限时优惠】满300减50，仅限今天！！",
    "《红楼梦》的作者是谁？",
    "1234567890",
    "😀😃😄😁🤣",
    "The quick brown fox jumps over the lazy dog.",
]

_PARAGRAPH = (
    "自然语言处理是计算机科学领域与人工智能领域中的一个重要方向。它研究能实现人与计算机之间用自然语言"
    "进行有效通信的各种理论和方法。自然语言处理是一门融语言学、计算机科学、数学于一体的科学。因此，这一"
    "领域的研究将涉及自然语言，即人们日常使用的语言，所以它与语言学的研究有着密切的联系，但又有重要的区别。"
    "自然语言处理并不是一般地研究自然语言，而在于研制能有效地实现自然语言通信的计算机系统，特别是其中的"
    "软件系统。因而它是计算机科学的一部分。"
)

_LONG = [
    _PARAGRAPH,
    _PARAGRAPH * 3,  # far beyond 512 tokens: exercises truncation
    ("客户反馈：" + "这个产品质量很好，物流也很快，客服态度非常好，下次还会再来购买。" * 12),
    " ".join(["embedding"] * 700),
]

_EDGE = ["", " ", "   \t\n  ", "？", "a", "。。。。。。"]

PARITY_SENTENCES: tuple[str, ...] = tuple(_QUERIES + _DIALOGUE + _MIXED + _LONG + _EDGE)
