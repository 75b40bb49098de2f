"""Plausible synthetic Chinese names, place names and well-formed fake phone numbers."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

Sex = Literal["m", "f"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Common surnames, weighted towards those frequent in Chongqing (谭, 向, 冉, 罗...).
SURNAMES = _words(
    "王 李 张 刘 陈 杨 黄 赵 吴 周 徐 孙 马 朱 胡 郭 何 高 林 罗 郑 梁 谢 宋 唐 许 韩 冯 邓 曹 "
    "彭 曾 肖 田 董 袁 潘 蒋 蔡 余 杜 叶 程 苏 魏 吕 丁 任 沈 姚 卢 钟 谭 陆 汪 范 石 廖 贾 夏 "
    "韦 付 方 白 邹 熊 秦 邱 江 尹 雷 龙 陶 黎 贺 顾 龚 万 严 覃 向 冉 牟 母 况"
)
# Given names typical of people born in the 1930s-1960s ...
ELDER_GIVEN: dict[Sex, tuple[str, ...]] = {
    "m": _words(
        "建国 国华 德明 志强 树林 光明 永福 长生 文华 正清 世荣 福贵 明德 家富 学文 国庆 "
        "洪才 绍华 兴福 克勤 宗祥 泽民 玉成 金山 跃进 汉清 远志 守仁 启明 德胜"
    ),
    "f": _words(
        "秀英 桂英 淑珍 玉兰 秀兰 桂兰 素芬 翠华 凤英 淑华 玉珍 秀珍 桂芳 琼英 素珍 "
        "德芳 碧华 惠芬 玉梅 明珍 淑琴 菊英 月华 群英 兰英 昌秀 光碧 泽芬 素清 家玉"
    ),
}
# ... and of their children, nephews and grandchildren.
YOUNGER_GIVEN: dict[Sex, tuple[str, ...]] = {
    "m": _words("伟 磊 勇 军 涛 斌 强 波 建军 小平 海涛 志刚 俊 浩 宇 鑫 超 杰 川 渝"),
    "f": _words("静 丽 敏 燕 艳 红梅 海燕 小琴 婷 娟 霞 莉 倩 雪 琳 佳 欢 玲 露 蓉"),
}
# Family contacts: relation to the elder and the contact's sex.
RELATIONS: tuple[tuple[str, Sex], ...] = (
    ("儿子", "m"),
    ("女儿", "f"),
    ("儿子", "m"),
    ("女儿", "f"),
    ("儿媳", "f"),
    ("女婿", "m"),
    ("侄子", "m"),
    ("侄女", "f"),
    ("孙子", "m"),
    ("孙女", "f"),
    ("外孙", "m"),
    ("外孙女", "f"),
)
SPOUSE = "配偶"
# Relations that carry the elder's surname.
_SAME_SURNAME = frozenset({"儿子", "女儿", "侄子", "侄女", "孙子", "孙女"})
# Stems for invented (but ordinary sounding) street, community and village names.
PLACE_STEMS = _words(
    "新华 人民 和平 建设 光明 东升 平安 龙泉 青山 花园 白沙 石门 桂花 长安 红岩 朝阳 "
    "柏树 黄桷 双龙 金竹 石桥 松林 杨家 李家 团结 胜利 复兴 新民 太平 鹅岭 大坪 清水 "
    "凤凰 回龙 马鞍 玉峰 土湾 沙湾 龙井 梨树"
)
# Mobile network prefixes (China Mobile / Unicom / Telecom).
MOBILE_PREFIXES = _words(
    "130 131 132 133 135 136 137 138 139 150 151 152 153 155 156 157 158 159 "
    "166 173 177 180 181 182 183 185 186 187 188 189 191 198 199"
)


def person_name(rng: random.Random, sex: Sex, *, elder: bool, surname: str | None = None) -> str:
    given = (ELDER_GIVEN if elder else YOUNGER_GIVEN)[sex]
    return (surname or rng.choice(SURNAMES)) + rng.choice(given)


def relative(rng: random.Random, elder_name: str) -> tuple[str, str]:
    """(name, relation) of a younger relative of the elder."""
    relation, sex = rng.choice(RELATIONS)
    surname = elder_name[0] if relation in _SAME_SURNAME else None
    return person_name(rng, sex, elder=False, surname=surname), relation


class PhoneBook:
    """Hands out unique, well-formed fake numbers (mobiles and landlines)."""

    def __init__(self, rng: random.Random, area_code: str) -> None:
        self._rng = rng
        self._area_code = area_code
        self._used: set[str] = set()

    def _unique(self, draw: Callable[[], str]) -> str:
        while (number := draw()) in self._used:
            pass
        self._used.add(number)
        return number

    def mobile(self) -> str:
        return self._unique(
            lambda: self._rng.choice(MOBILE_PREFIXES) + f"{self._rng.randrange(10**8):08d}"
        )

    def landline(self) -> str:
        return self._unique(lambda: f"{self._area_code}-6{self._rng.randrange(10**7):07d}")
