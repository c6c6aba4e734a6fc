"""Names of the pretrained embedding files MXNet 1.9.1 knows, and the archives they come in.

ember never downloads them: the names say which files ``GloVe`` and ``FastText`` accept and
what to look for on disk (the file itself, or the archive MXNet would have fetched)."""

UNKNOWN_IDX = 0     # the unknown token's index in every vocabulary and embedding

GLOVE_FILES = (
    "glove.42B.300d.txt", "glove.6B.50d.txt", "glove.6B.100d.txt", "glove.6B.200d.txt",
    "glove.6B.300d.txt", "glove.840B.300d.txt", "glove.twitter.27B.25d.txt",
    "glove.twitter.27B.50d.txt", "glove.twitter.27B.100d.txt", "glove.twitter.27B.200d.txt",
)
# GloVe's files come in four zip archives, one per corpus (the name's second field)
GLOVE_ARCHIVES = {"42B": "glove.42B.300d.zip", "6B": "glove.6B.zip",
                  "840B": "glove.840B.300d.zip", "twitter": "glove.twitter.27B.zip"}

# Wikipedia language codes of fastText's wiki.<code>.vec files
_WIKI = """
aa ab ace ady af ak als am an ang ar arc arz as ast av ay az azb ba bar bat_smg bcl be bg bh
bi bjn bm bn bo bpy br bs bug bxr ca cbk_zam cdo ce ceb ch cho chr chy ckb co cr crh cs csb cu
cv cy da de diq dsb dv dz ee el eml en eo es et eu ext fa ff fi fiu_vro fj fo fr frp frr fur fy
ga gag gan gd gl glk gn gom got gu gv ha hak haw he hi hif ho hr hsb ht hu hy hz ia id ie ig ii
ik ilo io is it iu ja jam jbo jv ka kaa kab kbd kg ki kj kk kl km kn ko koi kr krc ks ksh ku kv
kw ky la lad lb lbe lez lg li lij lmo ln lo lrc lt ltg lv mai map_bms mdf mg mh mhr mi min mk ml
mn mo mr mrj ms mt mus mwl my myv mzn na nah nap nds nds_nl ne new ng nl nn no nov nrm nso nv ny
oc olo om or os pa pag pam pap pcd pdc pfl pi pih pl pms pnb pnt ps pt qu rm rmy rn ro roa_rup
roa_tara ru rue rw sa sah sc scn sco sd se sg sh si simple sk sl sm sn so sq sr srn ss st stq su
sv sw szl ta tcy te tet tg th ti tk tl tn to tpi tr ts tt tum tw ty tyv udm ug uk ur uz ve vec
vep vi vls vo wa war wo wuu xal xh xmf yi yo za zea zh zh_classical zh_min_nan zh_yue zu
""".split()
# the aligned multilingual vectors (wiki.multi.<code>.vec)
_WIKI_MULTI = """
ar bg ca cs da de el en es et fi fr he hr hu id it mk nl no pl pt ro ru sk sl sv tr uk vi
""".split()

FAST_TEXT_FILES = (("crawl-300d-2M.vec", "wiki-news-300d-1M.vec",
                    "wiki-news-300d-1M-subword.vec")
                   + tuple(f"wiki.{code}.vec" for code in _WIKI)
                   + tuple(f"wiki.multi.{code}.vec" for code in _WIKI_MULTI))


def glove_archive(file_name: str) -> str:
    """The zip archive MXNet downloads for GloVe file ``file_name``."""
    return GLOVE_ARCHIVES[file_name.split(".")[1]]


def fast_text_archive(file_name: str) -> str:
    """The zip archive MXNet downloads for fastText file ``file_name`` (``x.vec`` ->
    ``x.zip``)."""
    return file_name.rsplit(".", 1)[0] + ".zip"
