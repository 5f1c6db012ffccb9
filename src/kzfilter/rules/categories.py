"""Citizen Lab category codes: their names, and the mapping of retired codes to current ones.

The tables below are written from the legend files of the Citizen Lab test lists
(github.com/citizenlab/test-lists, ``lists/00-LEGEND-new_category_codes.csv`` for the current codes
and the codes they replace, ``lists/00-LEGEND-category_codes.csv`` for the names of the old codes,
commit 7f01e430040e571f1315734ee36151a6897f71b5).  That data is licensed CC BY-NC-SA 4.0 by the
Citizen Lab (non-commercial, share-alike); the CSV files themselves are not shipped with kzfilter.

Old lists and older test-list revisions still carry retired codes (``FEXP``, ``POLT``, ``P2P``,
``VOIP``, ...); :func:`canonical_category` maps them to the current code so rules from lists of
different ages can be compared and counted together.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

__all__ = [
    "CATEGORY_DESCRIPTIONS", "CATEGORY_DETAILS", "OLD_CATEGORY_CODES", "OLD_CATEGORY_DESCRIPTIONS",
    "canonical_category", "is_category_code",
]

# Current code -> its name, as the test lists print it in their ``category_description`` column
# (legend column "Category Description").
CATEGORY_DESCRIPTIONS: Mapping[str, str] = MappingProxyType({
    'ALDR': 'Alcohol & Drugs',
    'REL': 'Religion',
    'PORN': 'Pornography',
    'PROV': 'Provocative Attire',
    'POLR': 'Political Criticism',
    'HUMR': 'Human Rights Issues',
    'ENV': 'Environment',
    'MILX': 'Terrorism and Militants',
    'HATE': 'Hate Speech',
    'NEWS': 'News Media',
    'XED': 'Sex Education',
    'PUBH': 'Public Health',
    'GMB': 'Gambling',
    'ANON': 'Anonymization and circumvention tools',
    'DATE': 'Online Dating',
    'GRP': 'Social Networking',
    'LGBT': 'LGBT',
    'FILE': 'File-sharing',
    'HACK': 'Hacking Tools',
    'COMT': 'Communication Tools',
    'MMED': 'Media sharing',
    'HOST': 'Hosting and Blogging Platforms',
    'SRCH': 'Search Engines',
    'GAME': 'Gaming',
    'CULTR': 'Culture',
    'ECON': 'Economics',
    'GOVT': 'Government',
    'COMM': 'E-commerce',
    'CTRL': 'Control content',
    'IGO': 'Intergovernmental Organizations',
    'MISC': 'Miscellaneous content',
})

# The long description of each current code (column "Description").
CATEGORY_DETAILS: Mapping[str, str] = MappingProxyType({
    'ALDR':
        'Sites devoted to the use, paraphernalia, and sale of drugs and alcohol irrespective of the local legality.',
    'REL':
        'Sites devoted to discussion of religious issues, both supportive and critical, as well as discussion of minority religious groups.',
    'PORN':
        'Hard-core and soft-core pornography.',
    'PROV':
        'Websites which show provocative attire and portray women in a sexual manner, wearing minimal clothing.',
    'POLR':
        'Content that offers critical political viewpoints. Includes critical authors and bloggers, as well as oppositional political organizations. Includes pro-democracy content, anti-corruption content as well as content calling for changes in leadership, governance issues, legal reform. Etc.',
    'HUMR':
        "Sites dedicated to discussing human rights issues in various forms. Includes women's rights and rights of minority ethnic groups.",
    'ENV':
        'Pollution, international environmental treaties, deforestation, environmental justice, disasters, etc.',
    'MILX':
        'Sites promoting terrorism, violent militant or separatist movements.',
    'HATE':
        'Content that disparages particular groups or persons based on race, sex, sexuality or other characteristics',
    'NEWS':
        'This category includes major news outlets (BBC, CNN, etc.) as well as regional news outlets and independent media.',
    'XED':
        'Includes contraception, abstinence, STDs, healthy sexuality, teen pregnancy, rape prevention, abortion, sexual rights, and sexual health services.',
    'PUBH':
        'HIV, SARS, bird flu, centers for disease control, World Health Organization, etc',
    'GMB':
        'Online gambling sites. Includes casino games, sports betting, etc.',
    'ANON':
        'Sites that provide tools used for anonymization, circumvention, proxy-services and encryption.',
    'DATE':
        'Online dating services which can be used to meet people, post profiles, chat, etc',
    'GRP':
        'Social networking tools and platforms.',
    'LGBT':
        'A range of gay-lesbian-bisexual-transgender queer issues. (Excluding pornography)',
    'FILE':
        'Sites and tools used to share files, including cloud-based file storage, torrents and P2P file-sharing tools.',
    'HACK':
        'Sites dedicated to computer security, including news and tools. Includes malicious and non-malicious content.',
    'COMT':
        'Sites and tools for individual and group communications. Includes webmail, VoIP, instant messaging, chat and mobile messaging applications.',
    'MMED':
        'Video, audio or photo sharing platforms.',
    'HOST':
        'Web hosting services, blogging and other online publishing platforms.',
    'SRCH':
        'Search engines and portals.',
    'GAME':
        'Online games and gaming platforms, excluding gambling sites.',
    'CULTR':
        'Content relating to entertainment, history, literature, music, film, books, satire and humour',
    'ECON':
        'General economic development and poverty related topics, agencies and funding opportunities',
    'GOVT':
        'Government-run websites, including military sites.',
    'COMM':
        'Websites of commercial services and products.',
    'CTRL':
        'Benign or innocuous content used as a control.',
    'IGO':
        'Websites of intergovernmental organizations such as the United Nations.',
    'MISC':
        "Sites that don't fit in any category (XXX Things in here should be categorised)",
})

# Old code -> current code (column "Replaces old code(s)"; IGO replaces nothing, and each current
# code also "replaces" itself, which is left out here).
OLD_CATEGORY_CODES: Mapping[str, str] = MappingProxyType({
    'POLT': 'POLR',
    'MINR': 'HUMR',
    'WOMR': 'HUMR',
    'MINF': 'HUMR',
    'FEXP': 'NEWS',
    'SELFHARM': 'PUBH',
    'GAYL': 'LGBT',
    'P2P': 'FILE',
    'SFTWR': 'FILE',
    'WRZ': 'FILE',
    'VOIP': 'COMT',
    'EMAIL': 'COMT',
    'TRNS': 'COMT',
    'MSG': 'COMT',
    'BLGSERV': 'HOST',
    'CLOUD': 'HOST',
    'HAL': 'CULTR',
    'DEV': 'ECON',
    'FREL': 'GOVT',
    'USMIL': 'GOVT',
    'CACH': 'CTRL',
    'KWRD': 'MISC',
})

# Names of the old codes, from 00-LEGEND-category_codes.csv (same repository and licence).
OLD_CATEGORY_DESCRIPTIONS: Mapping[str, str] = MappingProxyType({
    'FEXP': 'Freedom of expression and media freedom',
    'POLT': 'Political transformation',
    'POLR': 'Political reform',
    'MILX': 'Militants, extremists and separatists',
    'HUMR': 'Human rights',
    'FREL': 'Foreign relations and military',
    'MINR': 'Minority rights and ethnic content',
    'WOMR': "Women's rights",
    'ENV': 'Environment',
    'DEV': 'Economic development',
    'HAL': 'History, arts and literature',
    'HATE': 'Hate speech',
    'XED': 'Sex education and family planning',
    'PUBH': 'Public health',
    'GAYL': 'Gay & lesbian – no pornography',
    'PORN': 'Pornography',
    'PROV': 'Provocative attire',
    'DATE': 'Online dating',
    'GMB': 'Gambling',
    'GAME': 'Online gaming',
    'ALDR': 'Alcohol and drugs',
    'MINF': 'Minority faiths',
    'REL': 'Religious conversion, commentary and criticism',
    'ANON': 'Anonymizers and censorship circumvention',
    'HACK': 'Hacking',
    'BLGSERV': 'Blogging services',
    'HOST': 'Web hosting services',
    'VOIP': 'Voice over Internet Protocol (VoIP)',
    'EMAIL': 'Free email',
    'SRCH': 'Search engines',
    'TRNS': 'Translation',
    'MMED': 'Multimedia sharing',
    'P2P': 'Peer-to-peer file sharing',
    'GRP': 'Groups & social networking',
    'COMM': 'Commercial sites',
    'MISC': 'Miscellaneous',
})


def is_category_code(code: str) -> bool:
    """Return True when ``code`` (any case, surrounding spaces ignored) is a current or an old code."""
    key = code.strip().upper()
    return key in CATEGORY_DESCRIPTIONS or key in OLD_CATEGORY_CODES


def canonical_category(code: str) -> str:
    """Return the current Citizen Lab code for a current or retired code.

    Parameters:
        code: a category code in any case, e.g. ``"news"``, ``"FEXP"`` or ``" POLT "``.

    Returns:
        The current upper-case code: ``"NEWS"``, ``"NEWS"``, ``"POLR"``.

    Raises:
        ValueError: the code is neither a current nor a retired Citizen Lab code.

    Example:
        >>> canonical_category("p2p")
        'FILE'
    """
    key = code.strip().upper()
    if key in CATEGORY_DESCRIPTIONS:
        return key
    new = OLD_CATEGORY_CODES.get(key)
    if new is None:
        raise ValueError(f"unknown Citizen Lab category code {code!r}")
    return new
